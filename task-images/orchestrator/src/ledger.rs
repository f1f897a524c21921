//! The attempt's books: what was emitted, which states wait for the
//! destination, and what is committed.
//!
//! Architecture invariant: a state is committed only when the destination
//! has echoed it (or a later state), and the records counted as committed are
//! exactly those the source emitted before that state.

use std::collections::VecDeque;

use serde::Serialize;
use sluice_protocol::{AirbyteStateMessage, StateType, StreamDescriptor, StreamStatus};

/// Records and bytes of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub records: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// What the attempt did with one stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    pub stream: StreamDescriptor,
    pub emitted: Counts,
    pub committed: Counts,
    /// The last status the source reported for the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The source's estimate of the stream's rows, if it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_records: Option<i64>,
}

struct Pending {
    id: u64,
    state: AirbyteStateMessage,
    counts: Vec<Counts>,
}

/// The result of a destination's echo.
#[derive(Debug, PartialEq, Eq)]
pub enum Echo {
    /// These many source states became committed.
    Committed(usize),
    /// The echo matched no state waiting for one.
    Unmatched,
    /// Socket mode: the destination stored a different number of records
    /// than the source sent for that state.
    Miscounted { id: u64, sent: u64, stored: u64 },
}

pub struct Ledger {
    pub streams: Vec<StreamSummary>,
    /// Emitted since the last source STATE, per stream index.
    uncommitted: Vec<Counts>,
    pending: VecDeque<Pending>,
    committed: CommittedState,
    pub states_emitted: u64,
    pub states_committed: u64,
    /// Records of streams outside the catalog, dropped before the destination.
    pub records_filtered: u64,
    /// Socket mode: the source gives the ids and counts, and the
    /// destination may release a state before its copy reaches us.
    socket: bool,
    /// Socket mode: the highest id the destination released.
    released: u64,
    /// Socket mode: the id of the last state committed (ids start at 1).
    last_committed_id: u64,
}

impl Ledger {
    pub fn new(streams: Vec<StreamDescriptor>, resume_from: &[AirbyteStateMessage]) -> Self {
        let mut committed = CommittedState::default();
        for state in resume_from {
            committed.apply(state);
        }
        Ledger {
            uncommitted: vec![Counts::default(); streams.len()],
            streams: streams
                .into_iter()
                .map(|stream| StreamSummary {
                    stream,
                    emitted: Counts::default(),
                    committed: Counts::default(),
                    status: None,
                    estimated_records: None,
                })
                .collect(),
            pending: VecDeque::new(),
            committed,
            states_emitted: 0,
            states_committed: 0,
            records_filtered: 0,
            socket: false,
            released: 0,
            last_committed_id: 0,
        }
    }

    /// The books of a socket-mode attempt: states are matched by the
    /// source's ids, and each covers the `sourceStats.recordCount` records
    /// of its partition.
    pub fn for_sockets(mut self) -> Self {
        self.socket = true;
        self
    }

    pub fn emitted(&mut self, delta: &[(usize, Counts)]) {
        for &(index, counts) in delta {
            self.streams[index].emitted.add(counts);
            self.uncommitted[index].add(counts);
        }
    }

    /// The source emitted a STATE: it covers everything emitted since the last one.
    pub fn source_state(&mut self, id: u64, state: AirbyteStateMessage) {
        self.states_emitted += 1;
        if !self.socket {
            let counts = std::mem::replace(&mut self.uncommitted, vec![Counts::default(); self.streams.len()]);
            self.pending.push_back(Pending { id, state, counts });
            return;
        }
        // Socket mode: the records of the state's partition, in its stream.
        let mut counts = vec![Counts::default(); self.streams.len()];
        let records = state.source_stats.as_ref().and_then(|s| s.record_count).unwrap_or(0.0) as u64;
        let stream = state.stream.as_ref().map(|s| &s.stream_descriptor);
        if let Some(index) = stream.and_then(|d| self.streams.iter().position(|s| &s.stream == d)).or((self.streams.len() == 1).then_some(0)) {
            counts[index].records = records;
        }
        // Copies arrive from the source's threads in about, not exactly, id order.
        let at = self.pending.iter().rposition(|p| p.id < id).map_or(0, |p| p + 1);
        self.pending.insert(at, Pending { id, state, counts });
        self.commit_through(self.released);
    }

    /// The destination echoed a STATE. Matched by the `id` we gave it, or,
    /// for a destination that drops unknown fields, by its content. In
    /// socket mode the destination releases states in id order, so a release
    /// commits every state up to its id, including those whose copy from the
    /// source comes later; a release whose count differs from the source's is
    /// refused.
    pub fn destination_echo(&mut self, echoed: &AirbyteStateMessage) -> Echo {
        if self.socket {
            let Some(id) = echoed.id else { return Echo::Unmatched };
            if let Some(pending) = self.pending.iter().find(|p| p.id == id) {
                let count = |stats: &Option<sluice_protocol::AirbyteStateStats>| stats.as_ref().and_then(|s| s.record_count);
                let (sent, stored) = (count(&pending.state.source_stats), count(&echoed.destination_stats));
                if stored.is_some() && sent != stored {
                    return Echo::Miscounted { id, sent: sent.unwrap_or(0.0) as u64, stored: stored.unwrap_or(0.0) as u64 };
                }
            }
            self.released = self.released.max(id);
            return Echo::Committed(self.commit_through(self.released));
        }
        let position = match echoed.id {
            Some(id) => self.pending.iter().position(|p| p.id == id),
            None => {
                let bare = echoed.without_bookkeeping();
                self.pending.iter().position(|p| p.state.without_bookkeeping() == bare)
            }
        };
        let Some(position) = position else { return Echo::Unmatched };
        // An echo acknowledges every state before it as well.
        Echo::Committed(self.commit_through(self.pending[position].id))
    }

    fn commit_through(&mut self, id: u64) -> usize {
        let mut upto = 0;
        for pending in self.pending.iter().take_while(|p| p.id <= id) {
            // Socket mode: only in unbroken id order. A copy still on its way
            // from the source holds back the later ones, so that an older state
            // of a stream never overwrites a newer one.
            if self.socket && pending.id != self.last_committed_id + 1 + upto as u64 {
                break;
            }
            upto += 1;
        }
        if upto > 0 {
            self.last_committed_id = self.pending[upto - 1].id;
        }
        for pending in self.pending.drain(..upto) {
            self.committed.apply(&pending.state);
            for (summary, counts) in self.streams.iter_mut().zip(pending.counts) {
                summary.committed.add(counts);
                summary.emitted.records = summary.emitted.records.max(summary.committed.records);
            }
            self.states_committed += 1;
        }
        upto
    }

    /// Socket mode: a destination's count of a stream so far.
    pub fn destination_stats(&mut self, stream: &StreamDescriptor, counts: Counts) {
        if let Some(summary) = self.streams.iter_mut().find(|s| &s.stream == stream) {
            summary.emitted.records = summary.emitted.records.max(counts.records);
            summary.emitted.bytes = summary.emitted.bytes.max(counts.bytes);
        }
    }

    /// The destination ended successfully after reading all input and
    /// echoing every state: records after the last state are stored too,
    /// though no state covers them.
    pub fn destination_finished(&mut self) {
        for (summary, counts) in self.streams.iter_mut().zip(&mut self.uncommitted) {
            summary.committed.add(std::mem::take(counts));
        }
    }

    pub fn stream_status(&mut self, stream: &StreamDescriptor, status: &StreamStatus) {
        if let Some(summary) = self.streams.iter_mut().find(|s| &s.stream == stream) {
            summary.status = Some(status.to_string());
        }
    }

    pub fn estimate(&mut self, stream: &StreamDescriptor, rows: i64) {
        if let Some(summary) = self.streams.iter_mut().find(|s| &s.stream == stream) {
            summary.estimated_records = Some(rows);
        }
    }

    pub fn has_pending_states(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The committed state, as a connector's `--state` file holds it.
    pub fn committed_state(&self) -> Vec<AirbyteStateMessage> {
        self.committed.to_list()
    }

    pub fn committed_records(&self) -> u64 {
        self.streams.iter().map(|s| s.committed.records).sum()
    }
}

/// The latest committed state of each kind: per stream, global, legacy.
#[derive(Default)]
struct CommittedState {
    streams: Vec<(StreamDescriptor, AirbyteStateMessage)>,
    global: Option<AirbyteStateMessage>,
    legacy: Option<AirbyteStateMessage>,
    /// The kind applied last: a connector reads one kind, and the newest wins.
    latest: Option<StateType>,
}

impl CommittedState {
    fn apply(&mut self, state: &AirbyteStateMessage) {
        let clean = state.without_bookkeeping();
        self.latest = Some(state.state_type());
        match state.state_type() {
            StateType::Stream => {
                let Some(descriptor) = state.stream.as_ref().map(|s| s.stream_descriptor.clone()) else { return };
                match self.streams.iter_mut().find(|(d, _)| *d == descriptor) {
                    Some(entry) => entry.1 = clean,
                    None => self.streams.push((descriptor, clean)),
                }
            }
            StateType::Global => self.global = Some(clean),
            _ => self.legacy = Some(clean),
        }
    }

    fn to_list(&self) -> Vec<AirbyteStateMessage> {
        match self.latest {
            Some(StateType::Global) => self.global.iter().cloned().collect(),
            Some(StateType::Stream) => self.streams.iter().map(|(_, s)| s.clone()).collect(),
            Some(_) => self.legacy.iter().cloned().collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream_state(name: &str, cursor: i64) -> AirbyteStateMessage {
        AirbyteStateMessage::for_stream(StreamDescriptor::new(name, None), json!({ "cursor": cursor }))
    }

    fn ledger() -> Ledger {
        Ledger::new(vec![StreamDescriptor::new("a", None), StreamDescriptor::new("b", None)], &[])
    }

    #[test]
    fn an_echo_commits_its_state_and_every_earlier_one() {
        let mut l = ledger();
        l.emitted(&[(0, Counts { records: 2, bytes: 20 })]);
        l.source_state(1, stream_state("a", 2));
        l.emitted(&[(1, Counts { records: 3, bytes: 30 })]);
        l.source_state(2, stream_state("b", 3));
        l.emitted(&[(0, Counts { records: 1, bytes: 10 })]);
        assert_eq!(l.committed_records(), 0);

        let mut echo = stream_state("b", 3);
        echo.id = Some(2);
        assert_eq!(l.destination_echo(&echo), Echo::Committed(2));
        assert_eq!(l.committed_records(), 5);
        assert_eq!(l.committed_state(), vec![stream_state("a", 2), stream_state("b", 3)]);
        assert!(!l.has_pending_states());
        // The record after the last state is committed only by a clean finish.
        l.destination_finished();
        assert_eq!(l.committed_records(), 6);
    }

    #[test]
    fn echoes_without_ids_match_by_content_and_unknown_echoes_commit_nothing() {
        let mut l = ledger();
        l.source_state(1, stream_state("a", 1));
        l.source_state(2, stream_state("a", 2));
        assert_eq!(l.destination_echo(&stream_state("a", 9)), Echo::Unmatched);
        assert_eq!(l.destination_echo(&stream_state("a", 1)), Echo::Committed(1));
        assert_eq!(l.committed_state(), vec![stream_state("a", 1)]);
    }

    #[test]
    fn the_newest_kind_of_state_wins() {
        let global = AirbyteStateMessage { kind: Some(StateType::Global), global: serde_json::from_value(json!({"stream_states": []})).ok(), ..Default::default() };
        let mut l = Ledger::new(vec![StreamDescriptor::new("a", None)], &[global]);
        let mut s = stream_state("a", 5);
        s.id = Some(1);
        l.source_state(1, s.clone());
        l.destination_echo(&s);
        assert_eq!(l.committed_state(), vec![stream_state("a", 5)], "the connector moved from global to per-stream state");
    }

    #[test]
    fn resumed_state_is_kept_for_streams_this_attempt_did_not_touch() {
        let mut l = Ledger::new(vec![StreamDescriptor::new("a", None)], &[stream_state("a", 1), stream_state("z", 7)]);
        let mut s = stream_state("a", 5);
        s.id = Some(1);
        l.source_state(1, s.clone());
        l.destination_echo(&s);
        assert_eq!(l.committed_state(), vec![stream_state("a", 5), stream_state("z", 7)]);
    }

    fn partition_state(name: &str, cursor: i64, id: u64, records: f64) -> AirbyteStateMessage {
        AirbyteStateMessage {
            id: Some(id),
            partition_id: Some(format!("p{id}")),
            source_stats: Some(sluice_protocol::AirbyteStateStats { record_count: Some(records), ..Default::default() }),
            ..stream_state(name, cursor)
        }
    }

    fn released(state: &AirbyteStateMessage, stored: f64) -> AirbyteStateMessage {
        AirbyteStateMessage { destination_stats: Some(sluice_protocol::AirbyteStateStats { record_count: Some(stored), ..Default::default() }), ..state.clone() }
    }

    #[test]
    fn socket_mode_commits_by_the_sources_ids_even_when_the_release_comes_first() {
        let mut l = ledger().for_sockets();
        let (one, two, three) = (partition_state("a", 10, 1, 10.0), partition_state("b", 4, 2, 4.0), partition_state("a", 20, 3, 10.0));
        // The destination released 2 before the bookkeeper read the source's copies.
        assert_eq!(l.destination_echo(&released(&two, 4.0)), Echo::Committed(0));
        l.source_state(2, two.clone());
        assert_eq!(l.states_committed, 0, "state 1 is not released yet");
        l.source_state(1, one.clone());
        assert_eq!(l.states_committed, 2, "1 arrived, and 2 was already released");
        assert_eq!((l.streams[0].committed.records, l.streams[1].committed.records), (10, 4));
        l.source_state(3, three.clone());
        assert_eq!(l.destination_echo(&released(&three, 9.0)), Echo::Miscounted { id: 3, sent: 10, stored: 9 });
        assert_eq!(l.committed_state(), vec![stream_state("a", 10), stream_state("b", 4)], "a miscounted release commits nothing");
    }
}
