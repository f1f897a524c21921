import { useState } from "react";
import { ApiError, get, post, query, type Actor, type Connection, type Schedule, type StreamProperties } from "../api";
import { Empty, ErrorBox, Loading, Page } from "../components";
import { go } from "../route";
import { useLoad } from "../util";
import { ScheduleEditor } from "./schedule";
import { initialChoices, streamProblems, StreamsEditor, toConfigurations, type StreamChoice } from "./streams";

const STEPS = ["Source and destination", "Streams", "Schedule and settings"];

/** The new-connection wizard: endpoints, then streams from discover, then schedule. */
export function ConnectionNew({ workspaceId }: { workspaceId: string }) {
  const [step, setStep] = useState(0);
  const [sourceId, setSourceId] = useState("");
  const [destinationId, setDestinationId] = useState("");
  const [properties, setProperties] = useState<StreamProperties[] | null>(null);
  const [choices, setChoices] = useState<StreamChoice[]>([]);
  const [name, setName] = useState("");
  const [schedule, setSchedule] = useState<Schedule>({ scheduleType: "manual" });
  const [channel, setChannel] = useState("auto");
  const [behavior, setBehavior] = useState("ignore");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const actors = useLoad(
    () =>
      Promise.all([
        get<{ data: Actor[] }>(`/sources${query({ workspaceIds: workspaceId, limit: 100 })}`),
        get<{ data: Actor[] }>(`/destinations${query({ workspaceIds: workspaceId, limit: 100 })}`),
      ]),
    [workspaceId],
  );
  const [sources, destinations] = actors.data?.map((r) => r.data) ?? [[], []];

  const discover = () => {
    setBusy(true);
    setError(null);
    get<StreamProperties[]>(`/streams${query({ sourceId, destinationId, ignoreCache: true })}`).then(
      (p) => {
        setProperties(p);
        setChoices(initialChoices(p, null));
        const s = sources.find((x) => x.sourceId === sourceId);
        const d = destinations.find((x) => x.destinationId === destinationId);
        setName((n) => n || `${s?.name ?? "source"} → ${d?.name ?? "destination"}`);
        setStep(1);
        setBusy(false);
      },
      (e) => (setError(e), setBusy(false)),
    );
  };
  const create = () => {
    setBusy(true);
    setError(null);
    post<Connection>("/connections", {
      name,
      sourceId,
      destinationId,
      schedule,
      configurations: { streams: toConfigurations(choices, properties ?? []) },
      dataChannel: { mode: channel },
      nonBreakingSchemaUpdatesBehavior: behavior,
    }).then(
      (c) => go(`/connections/${c.connectionId}`),
      (e) => (setError(e), setBusy(false)),
    );
  };
  const problems = properties ? streamProblems(choices, properties) : [];

  return (
    <Page title="New connection">
      <ol className="steps" aria-label="Steps">
        {STEPS.map((s, i) => (
          <li key={s} aria-current={i === step ? "step" : undefined} className={i < step ? "done" : ""}>
            {s}
          </li>
        ))}
      </ol>
      {actors.loading && !actors.data && <Loading what="sources and destinations" />}
      <ErrorBox error={actors.error} />
      {step === 0 && actors.data && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            discover();
          }}
        >
          {sources.length === 0 || destinations.length === 0 ? (
            <Empty>
              <p>A connection needs a source and a destination.</p>
              {sources.length === 0 && <a className="button" href="#/sources/new">Create a source</a>}{" "}
              {destinations.length === 0 && <a className="button" href="#/destinations/new">Create a destination</a>}
            </Empty>
          ) : (
            <>
              <ChooseEndpoint kind="source" actors={sources} value={sourceId} onChange={setSourceId} />
              <ChooseEndpoint kind="destination" actors={destinations} value={destinationId} onChange={setDestinationId} />
              <ErrorBox error={error} />
              <div className="form-actions">
                <button type="submit" disabled={busy}>
                  {busy ? "Discovering the source's streams…" : "Next: streams"}
                </button>
              </div>
            </>
          )}
        </form>
      )}
      {step === 1 && properties && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (problems.length === 0) setStep(2);
          }}
        >
          <StreamsEditor properties={properties} choices={choices} onChange={setChoices} />
          {problems.length > 0 && (
            <ul role="alert" className="error">
              {problems.map((p) => (
                <li key={p}>{p}</li>
              ))}
            </ul>
          )}
          <div className="form-actions">
            <button type="button" className="secondary" onClick={() => setStep(0)}>
              Back
            </button>
            <button type="submit" disabled={problems.length > 0}>
              Next: schedule
            </button>
          </div>
        </form>
      )}
      {step === 2 && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            create();
          }}
        >
          <label htmlFor="connection-name">Connection name</label>
          <input id="connection-name" value={name} onChange={(e) => setName(e.target.value)} required />
          <ScheduleEditor value={schedule} onChange={setSchedule} />
          <Settings channel={channel} onChannel={setChannel} behavior={behavior} onBehavior={setBehavior} />
          <ErrorBox error={error} />
          {error instanceof ApiError && error.problem.errors?.map((f) => <p key={f.field} className="field-error">{f.field}: {f.message}</p>)}
          <div className="form-actions">
            <button type="button" className="secondary" onClick={() => setStep(1)}>
              Back
            </button>
            <button type="submit" disabled={busy}>
              {busy ? "Creating…" : "Create connection"}
            </button>
          </div>
        </form>
      )}
    </Page>
  );
}

function ChooseEndpoint({ kind, actors, value, onChange }: { kind: "source" | "destination"; actors: Actor[]; value: string; onChange: (id: string) => void }) {
  const id = (a: Actor) => (kind === "source" ? a.sourceId : a.destinationId)!;
  return (
    <>
      <label htmlFor={`wizard-${kind}`}>{kind === "source" ? "Source" : "Destination"}</label>
      <select id={`wizard-${kind}`} value={value} onChange={(e) => onChange(e.target.value)} required>
        <option value="">Choose a {kind}</option>
        {actors.map((a) => (
          <option key={id(a)} value={id(a)}>
            {a.name} ({kind === "source" ? a.sourceType : a.destinationType})
          </option>
        ))}
      </select>
      <p className="muted">
        Or <a href={`#/${kind}s/new`}>create a {kind}</a>.
      </p>
    </>
  );
}

export const BEHAVIORS: [string, string][] = [
  ["ignore", "Ignore: keep syncing as configured"],
  ["propagate_columns", "Propagate field changes only"],
  ["propagate_fully", "Propagate all field and stream changes"],
  ["disable_connection", "Pause the connection"],
];

export function Settings(props: { channel: string; onChannel: (c: string) => void; behavior: string; onBehavior: (b: string) => void }) {
  return (
    <>
      <label htmlFor="data-channel">Data channel</label>
      <select id="data-channel" value={props.channel} onChange={(e) => props.onChannel(e.target.value)}>
        <option value="auto">Automatic: sockets when both connectors support them</option>
        <option value="stdio">Standard streams (legacy mode) always</option>
      </select>
      <label htmlFor="schema-behavior">When the source's schema changes</label>
      <select id="schema-behavior" value={props.behavior} onChange={(e) => props.onBehavior(e.target.value)}>
        {BEHAVIORS.map(([v, label]) => (
          <option key={v} value={v}>
            {label}
          </option>
        ))}
      </select>
    </>
  );
}
