import { useState, type ReactNode } from "react";
import { api, get, post, query, RUNNING, type Actor, type Attempt, type Connection, type Job, type Schedule, type StreamProperties } from "../api";
import { ErrorBox, Loading, Page, Status, Table } from "../components";
import { go } from "../route";
import { bytes, count, duration, errorText, useLoad, when } from "../util";
import { Settings } from "./ConnectionNew";
import { nextRun, ScheduleEditor, scheduleText } from "./schedule";
import { initialChoices, streamProblems, StreamsEditor, toConfigurations, type StreamChoice } from "./streams";

type Loaded = { connection: Connection; source: Actor; destination: Actor; next: string | null; diff: any };

export function ConnectionPage({ connectionId }: { connectionId: string; workspaceId: string }) {
  const [message, setMessage] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [editing, setEditing] = useState(false);
  const loaded = useLoad<Loaded>(async () => {
    const connection = await get<Connection>(`/connections/${connectionId}`);
    const [source, destination, next, schema] = await Promise.all([
      get<Actor>(`/sources/${connection.sourceId}`),
      get<Actor>(`/destinations/${connection.destinationId}`),
      nextRun(connection.schedule),
      get(`/connections/${connectionId}/schema`).catch(() => null),
    ]);
    return { connection, source, destination, next, diff: schema?.catalogDiff ?? null };
  }, [connectionId]);
  const jobs = useLoad(() => get<{ data: Job[] }>(`/jobs${query({ connectionId, limit: 20, orderBy: "createdAt|DESC" })}`).then((r) => r.data), [connectionId], {
    everyMs: 1500,
    while: (data) => !!data?.some((j) => RUNNING.includes(j.status)),
  });
  const running = jobs.data?.find((j) => RUNNING.includes(j.status));
  const act = (what: string, call: () => Promise<unknown>) => {
    setError(null);
    setMessage(null);
    call().then(
      () => (setMessage(what), jobs.reload(), loaded.reload()),
      (e) => setError(e),
    );
  };
  const startJob = (jobType: string) => act(`${jobType === "sync" ? "Sync" : jobType[0].toUpperCase() + jobType.slice(1)} started.`, () => post("/jobs", { connectionId, jobType }));

  if (!loaded.data) return loaded.error ? <ErrorBox error={loaded.error} /> : <Loading what="the connection" />;
  const { connection: c, source, destination, next, diff } = loaded.data;
  const active = c.status === "active";
  return (
    <Page
      title={c.name}
      actions={
        <>
          {running ? (
            <button type="button" className="danger" onClick={() => act("Cancellation requested.", () => api("DELETE", `/jobs/${running.jobId}`))}>
              Cancel {running.jobType}
            </button>
          ) : (
            <button type="button" onClick={() => startJob("sync")} disabled={!active}>
              Sync now
            </button>
          )}
          <button type="button" className="secondary" onClick={() => act(active ? "Connection disabled." : "Connection enabled.", () => api("PATCH", `/connections/${connectionId}`, { status: active ? "inactive" : "active" }))}>
            {active ? "Disable" : "Enable"}
          </button>
          <button type="button" className="secondary" onClick={() => setEditing((e) => !e)} aria-expanded={editing}>
            {editing ? "Close editor" : "Edit"}
          </button>
        </>
      }
    >
      <dl className="facts">
        {(
          [
            ["Status", <Status value={c.status} />],
            ["Source", <a href={`#/sources/${source.sourceId}`}>{source.name}</a>],
            ["Destination", <a href={`#/destinations/${destination.destinationId}`}>{destination.name}</a>],
            ["Schedule", scheduleText(c.schedule)],
            ["Next run", active && next ? when(next) : "—"],
            ["Streams", c.configurations.streams.map((s) => s.name).join(", ") || "none"],
          ] as [string, ReactNode][]
        ).map(([term, value]) => (
          <div key={term}>
            <dt>{term}</dt>
            <dd>{value}</dd>
          </div>
        ))}
      </dl>
      {c.schemaChange !== "no_change" && (
        <div role="status" className={c.schemaChange === "breaking" ? "error" : "notice"}>
          The source's schema has changed ({c.schemaChange.replace("_", " ")}).{" "}
          {diff?.transforms?.length ? `${diff.transforms.length} change(s) not applied: ${diff.transforms.map((t: any) => `${t.transformType} ${t.streamDescriptor?.name ?? ""}`).join(", ")}.` : ""} Review the streams in the editor.
        </div>
      )}
      {message && (
        <p role="status" className="notice">
          {message}
        </p>
      )}
      <ErrorBox error={error} />
      {editing && (
        <Editor
          connection={c}
          onSaved={() => {
            setEditing(false);
            setMessage("Connection saved.");
            loaded.reload();
          }}
        />
      )}
      <section aria-labelledby="more-actions">
        <h2 id="more-actions" className="visually-hidden">
          More actions
        </h2>
        <div className="actions wrap">
          <button type="button" className="secondary" disabled={!active || !!running} onClick={() => confirm("Re-read every stream from the start, keeping what the destination holds?") && startJob("refresh")}>
            Refresh streams
          </button>
          <button type="button" className="secondary" disabled={!active || !!running} onClick={() => confirm("Clear the destination's data and state for every stream?") && startJob("clear")}>
            Clear data
          </button>
          <button type="button" className="secondary" disabled={!active || !!running} onClick={() => confirm("Reset: clear the data, then sync from the start?") && startJob("reset")}>
            Reset
          </button>
          <button type="button" className="secondary" onClick={() => act("Schema checked.", () => post(`/connections/${connectionId}/schema/refresh`))}>
            Check the source's schema
          </button>
          <button
            type="button"
            className="danger secondary"
            onClick={() => confirm(`Delete the connection ${c.name}? Its jobs stay in the history.`) && api("DELETE", `/connections/${connectionId}`).then(() => go("/connections"), setError)}
          >
            Delete
          </button>
        </div>
      </section>
      {running && <Progress job={running} />}
      <h2>Job history</h2>
      <ErrorBox error={jobs.error} />
      {!jobs.data ? (
        <Loading what="jobs" />
      ) : jobs.data.length === 0 ? (
        <p className="muted">No jobs yet: sync now, or wait for the schedule.</p>
      ) : (
        <Table label="Job history" head={["Job", "Type", "Status", "Started", "Duration", "Rows", "Bytes", ""]}>
          {jobs.data.map((j) => (
            <JobRow key={j.jobId} job={j} connectionId={connectionId} />
          ))}
        </Table>
      )}
    </Page>
  );
}

function JobRow({ job, connectionId }: { job: Job; connectionId: string }) {
  const [open, setOpen] = useState(false);
  const failed = job.status === "failed" || job.status === "incomplete";
  const attempts = useLoad(() => (open || failed ? get<{ attempts: Attempt[] }>(`/jobs/${job.jobId}/attempts`).then((r) => r.attempts) : Promise.resolve(null)), [job.jobId, job.status, open]);
  const reason = attempts.data?.findLast((a) => a.failure)?.failure;
  return (
    <>
      <tr>
        <td>
          <button type="button" className="link" aria-expanded={open} onClick={() => setOpen((o) => !o)} aria-label={`Job ${job.jobId} details`}>
            #{job.jobId}
          </button>
        </td>
        <td>{job.jobType}</td>
        <td>
          <Status value={job.status} />
          {reason && <div className="failure">{reason.message}</div>}
        </td>
        <td>{when(job.startTime)}</td>
        <td>{duration(job.duration)}</td>
        <td className="num" data-testid={`rows-${job.jobId}`}>
          {count(job.rowsSynced)}
        </td>
        <td className="num">{bytes(job.bytesSynced)}</td>
        <td>
          <a href={`#/connections/${connectionId}/jobs/${job.jobId}`}>Log</a>
        </td>
      </tr>
      {open && (
        <tr className="detail">
          <td colSpan={8}>{attempts.data ? <Attempts attempts={attempts.data} /> : <Loading what="attempts" />}</td>
        </tr>
      )}
    </>
  );
}

function Attempts({ attempts }: { attempts: Attempt[] }) {
  return (
    <div>
      {attempts.map((a) => (
        <div key={a.attempt} className="attempt">
          <p>
            Attempt {a.attempt + 1}: <Status value={a.status} /> {when(a.startedAt)} → {when(a.endedAt)}; {count(a.recordsCommitted)} records, {bytes(a.bytesCommitted)} committed
          </p>
          {a.failure && (
            <p className="failure">
              {a.failure.origin ? `${a.failure.origin}: ` : ""}
              {a.failure.message}
            </p>
          )}
          {a.streams.length > 0 && (
            <Table label={`Attempt ${a.attempt + 1} streams`} head={["Stream", "Records emitted", "Records committed", "Bytes committed"]}>
              {a.streams.map((s) => (
                <tr key={`${s.namespace ?? ""}.${s.name}`}>
                  <td>{s.name}</td>
                  <td className="num">{count(s.recordsEmitted)}</td>
                  <td className="num">{count(s.recordsCommitted)}</td>
                  <td className="num">{bytes(s.bytesCommitted)}</td>
                </tr>
              ))}
            </Table>
          )}
        </div>
      ))}
    </div>
  );
}

/** A running job's attempts, polled: records so far, per stream. */
function Progress({ job }: { job: Job }) {
  const attempts = useLoad(() => get<{ attempts: Attempt[] }>(`/jobs/${job.jobId}/attempts`).then((r) => r.attempts), [job.jobId], { everyMs: 1000, while: () => true });
  const current = attempts.data?.[attempts.data.length - 1];
  return (
    <section className="progress" aria-labelledby="progress-title">
      <h2 id="progress-title">
        Running: {job.jobType} #{job.jobId}
      </h2>
      <p aria-live="polite">
        {current ? `Attempt ${current.attempt + 1}: ${count(current.recordsEmitted)} records read, ${count(current.recordsCommitted)} committed (${bytes(current.bytesEmitted)})` : "Starting…"}{" "}
        <a href={`#/connections/${job.connectionId}/jobs/${job.jobId}`}>Follow the log</a>
      </p>
    </section>
  );
}

function Editor({ connection, onSaved }: { connection: Connection; onSaved: () => void }) {
  const [name, setName] = useState(connection.name);
  const [schedule, setSchedule] = useState<Schedule>(connection.schedule);
  const [channel, setChannel] = useState(connection.dataChannel?.mode ?? "auto");
  const [behavior, setBehavior] = useState(connection.nonBreakingSchemaUpdatesBehavior);
  const [choices, setChoices] = useState<StreamChoice[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const properties = useLoad(
    () =>
      get<StreamProperties[]>(`/streams${query({ sourceId: connection.sourceId })}`).then((p) => {
        setChoices(initialChoices(p, connection.configurations.streams));
        return p;
      }),
    [connection.connectionId],
  );
  const problems = properties.data && choices ? streamProblems(choices, properties.data) : [];
  return (
    <form
      className="editor"
      aria-label="Edit connection"
      onSubmit={(e) => {
        e.preventDefault();
        const body: any = { name, schedule, nonBreakingSchemaUpdatesBehavior: behavior, dataChannel: { ...(connection.dataChannel ?? {}), mode: channel } };
        if (properties.data && choices) body.configurations = { streams: toConfigurations(choices, properties.data) };
        api("PATCH", `/connections/${connection.connectionId}`, body).then(onSaved, setError);
      }}
    >
      <label htmlFor="edit-name">Name</label>
      <input id="edit-name" value={name} onChange={(e) => setName(e.target.value)} required />
      <ScheduleEditor value={schedule} onChange={setSchedule} />
      <Settings channel={channel} onChannel={setChannel} behavior={behavior} onBehavior={setBehavior} />
      <h3>Streams</h3>
      {properties.error ? <p className="error">Cannot read the source's streams: {errorText(properties.error)}</p> : null}
      {properties.data && choices ? <StreamsEditor properties={properties.data} choices={choices} onChange={setChoices} /> : !properties.error && <Loading what="streams" />}
      {problems.length > 0 && (
        <ul role="alert" className="error">
          {problems.map((p) => (
            <li key={p}>{p}</li>
          ))}
        </ul>
      )}
      <ErrorBox error={error} />
      <div className="form-actions">
        <button type="submit" disabled={problems.length > 0}>
          Save
        </button>
      </div>
    </form>
  );
}
