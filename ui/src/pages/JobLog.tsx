import { useEffect, useRef, useState } from "react";
import { get, RUNNING, type Attempt, type Job } from "../api";
import { ErrorBox, Loading, Page, Status } from "../components";
import { count, duration, useLoad, when } from "../util";

/** A job's attempts and each one's log, followed while it is written. */
export function JobLog({ connectionId, jobId }: { connectionId: string; jobId: number }) {
  const job = useLoad(() => get<Job>(`/jobs/${jobId}`), [jobId], { everyMs: 2000, while: (j) => !!j && RUNNING.includes(j.status) });
  const attempts = useLoad(() => get<{ attempts: Attempt[] }>(`/jobs/${jobId}/attempts`).then((r) => r.attempts), [jobId, job.data?.status]);
  const [chosen, setChosen] = useState<number | null>(null);
  const list = attempts.data ?? [];
  const attempt = chosen ?? (list.length ? list[list.length - 1].attempt : null);
  return (
    <Page title={`Job #${jobId}`} actions={<a className="button secondary" href={`#/connections/${connectionId}`}>Back to the connection</a>}>
      <ErrorBox error={job.error} />
      {job.data && (
        <p>
          {job.data.jobType} · <Status value={job.data.status} /> · started {when(job.data.startTime)} · {duration(job.data.duration)} · {count(job.data.rowsSynced)} rows
        </p>
      )}
      {list.length > 1 && (
        <div role="tablist" aria-label="Attempts" className="tabs">
          {list.map((a) => (
            <button key={a.attempt} role="tab" type="button" aria-selected={a.attempt === attempt} onClick={() => setChosen(a.attempt)}>
              Attempt {a.attempt + 1} <Status value={a.status} />
            </button>
          ))}
        </div>
      )}
      {list.find((a) => a.attempt === attempt)?.failure && <p className="failure">{list.find((a) => a.attempt === attempt)!.failure!.message}</p>}
      {attempt === null ? attempts.loading ? <Loading what="attempts" /> : <p className="muted">No attempt has started yet.</p> : <Log key={attempt} jobId={jobId} attempt={attempt} />}
    </Page>
  );
}

function Log({ jobId, attempt }: { jobId: number; attempt: number }) {
  const [text, setText] = useState("");
  const [state, setState] = useState<{ live: boolean; error?: unknown }>({ live: true });
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    let offset = 0;
    let stopped = false;
    let timer: number | undefined;
    const poll = async () => {
      try {
        const r = await get<{ text: string; nextOffset: number; attemptStatus: string }>(`/jobs/${jobId}/attempts/${attempt}/logs?offset=${offset}`);
        if (stopped) return;
        const atBottom = pre.current ? pre.current.scrollHeight - pre.current.scrollTop - pre.current.clientHeight < 40 : true;
        if (r.text) setText((t) => t + r.text);
        offset = r.nextOffset;
        const live = r.attemptStatus === "running" || r.text.length > 0;
        setState({ live });
        if (atBottom) requestAnimationFrame(() => pre.current && (pre.current.scrollTop = pre.current.scrollHeight));
        if (live) timer = window.setTimeout(poll, r.text ? 200 : 1000);
      } catch (error) {
        if (!stopped) setState({ live: false, error });
      }
    };
    poll();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [jobId, attempt]);
  return (
    <section aria-labelledby="log-title">
      <h2 id="log-title">
        Log of attempt {attempt + 1} {state.live && <span className="muted">(following)</span>}
      </h2>
      <ErrorBox error={state.error} />
      <pre ref={pre} className="log" tabIndex={0} aria-label={`Log of attempt ${attempt + 1}`} data-testid="log">
        {text || "(empty so far)"}
      </pre>
    </section>
  );
}
