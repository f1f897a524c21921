//! Plain data: the messages of PostgreSQL's `pgoutput` logical decoding
//! plugin (protocol version 1), as `pg_logical_slot_peek_binary_changes`
//! returns them, one message a row.

/// One column of a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum<'a> {
    Null,
    /// A TOASTed value that the update left unchanged: not sent.
    Unchanged,
    /// The value in its type's text form.
    Text(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub name: String,
    /// Part of the replica identity (the key).
    pub key: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Begin { final_lsn: u64, commit_micros: i64, xid: u32 },
    Commit { commit_lsn: u64, end_lsn: u64, commit_micros: i64 },
    /// Sent before the first change to a table in a session, and after its shape changed.
    Relation { id: u32, schema: String, name: String, replica_identity: u8, columns: Vec<RelationColumn> },
    Insert { relation: u32, new: Vec<Datum<'a>> },
    /// `old` is the old key ('K') or the whole old row ('O', replica identity full), when sent.
    Update { relation: u32, old: Option<Vec<Datum<'a>>>, new: Vec<Datum<'a>> },
    Delete { relation: u32, old: Vec<Datum<'a>> },
    Truncate { relations: Vec<u32> },
    /// Origin, Type and logical messages: nothing a record is made of.
    Other(u8),
}

#[derive(Debug, PartialEq)]
pub struct DecodeError(pub String);

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| DecodeError(format!("message cut at byte {} (wanted {n} more)", self.at)))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| DecodeError("a string without its NUL".into()))?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum<'a>>, DecodeError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| match self.u8()? {
                b'n' => Ok(Datum::Null),
                b'u' => Ok(Datum::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    Ok(Datum::Text(self.take(len)?))
                }
                other => Err(DecodeError(format!("a column of kind {:?} (only text is asked for)", other as char))),
            })
            .collect()
    }
}

pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.u8()?;
    Ok(match kind {
        b'B' => Message::Begin { final_lsn: r.u64()?, commit_micros: r.u64()? as i64, xid: r.u32()? },
        b'C' => {
            r.u8()?;
            Message::Commit { commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_micros: r.u64()? as i64 }
        }
        b'R' => {
            let id = r.u32()?;
            let (schema, name) = (r.string()?, r.string()?);
            let replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.string()?;
                r.u32()?; // type oid
                r.u32()?; // typmod
                columns.push(RelationColumn { name, key: flags & 1 == 1 });
            }
            Message::Relation { id, schema, name, replica_identity, columns }
        }
        b'I' => {
            let relation = r.u32()?;
            expect(r.u8()?, b'N')?;
            Message::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut marker = r.u8()?;
            let mut old = None;
            if marker == b'K' || marker == b'O' {
                old = Some(r.tuple()?);
                marker = r.u8()?;
            }
            expect(marker, b'N')?;
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            let marker = r.u8()?;
            if marker != b'K' && marker != b'O' {
                return Err(DecodeError(format!("a delete with tuple marker {:?}", marker as char)));
            }
            Message::Delete { relation, old: r.tuple()? }
        }
        b'T' => {
            let n = r.u32()?;
            r.u8()?;
            Message::Truncate { relations: (0..n).map(|_| r.u32()).collect::<Result<_, _>>()? }
        }
        other => Message::Other(other),
    })
}

fn expect(got: u8, want: u8) -> Result<(), DecodeError> {
    if got == want {
        Ok(())
    } else {
        Err(DecodeError(format!("tuple marker {:?} where {:?} was expected", got as char, want as char)))
    }
}

/// An LSN as PostgreSQL writes it: `16/B374D848`.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut out = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => out.push(b'n'),
                Some(text) => {
                    out.push(b't');
                    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn decodes_the_messages_a_change_is_made_of() {
        let mut relation = vec![b'R'];
        relation.extend_from_slice(&16384u32.to_be_bytes());
        relation.extend_from_slice(b"public\0items\0d");
        relation.extend_from_slice(&2u16.to_be_bytes());
        relation.extend_from_slice(b"\x01id\0\0\0\0\x17\xff\xff\xff\xff\x00note\0\0\0\0\x19\xff\xff\xff\xff");
        assert_eq!(
            decode(&relation).unwrap(),
            Message::Relation {
                id: 16384,
                schema: "public".into(),
                name: "items".into(),
                replica_identity: b'd',
                columns: vec![RelationColumn { name: "id".into(), key: true }, RelationColumn { name: "note".into(), key: false }]
            }
        );
        let mut update = vec![b'U'];
        update.extend_from_slice(&16384u32.to_be_bytes());
        update.push(b'K');
        update.extend_from_slice(&tuple(&[Some("7"), None]));
        update.push(b'N');
        update.extend_from_slice(&tuple(&[Some("8"), Some("x")]));
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update { relation: 16384, old: Some(vec![Datum::Text(b"7"), Datum::Null]), new: vec![Datum::Text(b"8"), Datum::Text(b"x")] }
        );
        let mut commit = vec![b'C', 0];
        for v in [0x10u64, 0x20, 5] {
            commit.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(decode(&commit).unwrap(), Message::Commit { commit_lsn: 0x10, end_lsn: 0x20, commit_micros: 5 });
        assert!(decode(&update[..update.len() - 1]).is_err(), "a cut message is an error, not a panic");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
    }
}
