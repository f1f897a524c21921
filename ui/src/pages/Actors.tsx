import { useMemo, useState } from "react";
import { api, ApiError, get, post, query, type Actor, type Definition, type FieldError } from "../api";
import { Empty, ErrorBox, Loading, Page, Table } from "../components";
import { ConnectorForm } from "../form/ConnectorForm";
import type { JsonSchema } from "../form/specToForm";
import { go } from "../route";
import { runtimeText } from "./Definitions";
import { useLoad, when } from "../util";
import type { Kind } from "../App";

const plural = (kind: Kind) => `${kind}s`;
const title = (kind: Kind) => (kind === "source" ? "Sources" : "Destinations");
const idOf = (kind: Kind, a: Actor) => (kind === "source" ? a.sourceId : a.destinationId)!;
const typeOf = (kind: Kind, a: Actor) => (kind === "source" ? a.sourceType : a.destinationType);

export function ActorList({ kind, workspaceId }: { kind: Kind; workspaceId: string }) {
  const actors = useLoad(() => get<{ data: Actor[] }>(`/${plural(kind)}${query({ workspaceIds: workspaceId, limit: 100 })}`).then((r) => r.data), [kind, workspaceId]);
  return (
    <Page title={title(kind)} actions={<a className="button" href={`#/${plural(kind)}/new`}>New {kind}</a>}>
      <ErrorBox error={actors.error} />
      {!actors.data ? (
        <Loading what={plural(kind)} />
      ) : actors.data.length === 0 ? (
        <Empty>
          <p>No {plural(kind)} yet.</p>
          <a className="button" href={`#/${plural(kind)}/new`}>Set up a {kind}</a>
        </Empty>
      ) : (
        <Table label={title(kind)} head={["Name", "Connector", "Created"]}>
          {actors.data.map((a) => (
            <tr key={idOf(kind, a)}>
              <td>
                <a href={`#/${plural(kind)}/${idOf(kind, a)}`}>{a.name}</a>
              </td>
              <td>{typeOf(kind, a)}</td>
              <td>{when(a.createdAt)}</td>
            </tr>
          ))}
        </Table>
      )}
    </Page>
  );
}

function definitionsOf(kind: Kind, workspaceId: string) {
  return get<{ data: Definition[] }>(`/workspaces/${workspaceId}/definitions/${plural(kind)}`).then((r) => r.data.sort((a, b) => a.name.localeCompare(b.name)));
}

function specOf(kind: Kind, workspaceId: string, definitionId: string) {
  return get<{ connectionSpecification: JsonSchema }>(`/workspaces/${workspaceId}/definitions/${plural(kind)}/${definitionId}/specification`).then((r) => r.connectionSpecification);
}

type Check = { status: string; message?: string | null };

function CheckResult({ check }: { check: Check | null }) {
  if (!check) return null;
  const ok = check.status.toLowerCase() === "succeeded";
  return (
    <div role="status" className={ok ? "notice ok" : "error"}>
      {ok ? "Connection test succeeded." : `Connection test failed: ${check.message ?? "no reason given"}`}
    </div>
  );
}

/** Choose a connector, then fill the form its spec describes. */
export function ActorNew({ kind, workspaceId }: { kind: Kind; workspaceId: string }) {
  const definitions = useLoad(() => definitionsOf(kind, workspaceId), [kind, workspaceId]);
  const [filter, setFilter] = useState("");
  const [definition, setDefinition] = useState<Definition | null>(null);
  const shown = useMemo(() => (definitions.data ?? []).filter((d) => `${d.name} ${d.sourceType ?? d.destinationType}`.toLowerCase().includes(filter.toLowerCase())), [definitions.data, filter]);
  if (definition) return <ActorSetup kind={kind} workspaceId={workspaceId} definition={definition} onBack={() => setDefinition(null)} />;
  return (
    <Page title={`New ${kind}`}>
      <label htmlFor="connector-filter">Find a connector</label>
      <input id="connector-filter" type="search" value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="faker, postgres, s3…" />
      <ErrorBox error={definitions.error} />
      {!definitions.data ? (
        <Loading what="connectors" />
      ) : shown.length === 0 ? (
        <Empty>No connector matches “{filter}”.</Empty>
      ) : (
        <ul className="connector-grid" aria-label="Connectors">
          {shown.map((d) => (
            <li key={d.id}>
              <button type="button" className="connector" onClick={() => setDefinition(d)}>
                <strong>{d.name}</strong>
                <span className="muted">
                  {d.sourceType ?? d.destinationType} · {runtimeText(d.runtime)}
                </span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </Page>
  );
}

function ActorSetup({ kind, workspaceId, definition, onBack }: { kind: Kind; workspaceId: string; definition: Definition; onBack: () => void }) {
  const spec = useLoad(() => specOf(kind, workspaceId, definition.id), [definition.id]);
  const [name, setName] = useState(definition.name);
  const [data, setData] = useState<Record<string, unknown>>({});
  const [errors, setErrors] = useState<FieldError[] | undefined>();
  const [error, setError] = useState<unknown>(null);
  const [check, setCheck] = useState<Check | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [created, setCreated] = useState<string | null>(null);

  const save = async (configuration: Record<string, unknown>) => {
    setError(null);
    setErrors(undefined);
    setCheck(null);
    try {
      setBusy("Saving…");
      let id = created;
      if (id) {
        await api("PUT", `/${plural(kind)}/${id}`, { name, configuration });
      } else {
        const actor = await post<Actor>(`/${plural(kind)}`, { name, workspaceId, definitionId: definition.id, configuration });
        id = idOf(kind, actor);
        setCreated(id);
      }
      setBusy("Testing the connection…");
      const result = await post<Check>(`/${plural(kind)}/${id}/check`);
      setCheck(result);
      setBusy(null);
      if (result.status.toLowerCase() === "succeeded") go(`/${plural(kind)}/${id}?created=1`);
    } catch (e) {
      setBusy(null);
      setError(e);
      if (e instanceof ApiError) setErrors(e.problem.errors);
    }
  };

  return (
    <Page title={`New ${kind}: ${definition.name}`} actions={<button type="button" className="secondary" onClick={onBack}>Choose another connector</button>}>
      <label htmlFor="actor-name">{kind === "source" ? "Source" : "Destination"} name</label>
      <input id="actor-name" value={name} onChange={(e) => setName(e.target.value)} required />
      <ErrorBox error={spec.error} />
      {!spec.data ? (
        !spec.error && <Loading what={`${definition.name}'s form (its spec)`} />
      ) : (
        <ConnectorForm spec={spec.data} formData={data} onChange={setData} onSubmit={save} serverErrors={errors}>
          <ErrorBox error={error} />
          <CheckResult check={check} />
          <div className="form-actions">
            <button type="submit" disabled={!!busy}>
              {busy ?? `Set up ${kind}`}
            </button>
          </div>
        </ConnectorForm>
      )}
      {created && check?.status.toLowerCase() !== "succeeded" && (
        <p className="muted">
          The {kind} is saved; fix its settings and test again, or <a href={`#/${plural(kind)}/${created}`}>open it</a>.
        </p>
      )}
    </Page>
  );
}

/** A saved source or destination: its form, secrets masked until replaced. */
export function ActorPage({ kind, id, workspaceId }: { kind: Kind; id: string; workspaceId: string }) {
  const loaded = useLoad(async () => {
    const actor = await get<Actor>(`/${plural(kind)}/${id}`);
    const spec = await specOf(kind, workspaceId, actor.definitionId);
    const { [`${kind}Type`]: _type, ...configuration } = actor.configuration;
    return { actor, spec, configuration };
  }, [kind, id]);
  const [data, setData] = useState<Record<string, unknown> | null>(null);
  const [name, setName] = useState<string | null>(null);
  const [errors, setErrors] = useState<FieldError[] | undefined>();
  const [error, setError] = useState<unknown>(null);
  const [check, setCheck] = useState<Check | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  if (!loaded.data) return loaded.error ? <ErrorBox error={loaded.error} /> : <Loading what={`the ${kind}`} />;
  const { actor, spec, configuration } = loaded.data;

  const run = async (step: () => Promise<void>) => {
    setError(null);
    setErrors(undefined);
    setCheck(null);
    setSaved(false);
    try {
      await step();
    } catch (e) {
      setError(e);
      if (e instanceof ApiError) setErrors(e.problem.errors);
    }
    setBusy(null);
  };
  const save = (config: Record<string, unknown>) =>
    run(async () => {
      setBusy("Saving…");
      await api("PUT", `/${plural(kind)}/${id}`, { name: name ?? actor.name, configuration: config });
      setSaved(true);
      setBusy("Testing the connection…");
      setCheck(await post<Check>(`/${plural(kind)}/${id}/check`));
    });
  const test = () =>
    run(async () => {
      setBusy("Testing the connection…");
      setCheck(await post<Check>(`/${plural(kind)}/${id}/check`));
    });
  return (
    <Page
      title={name ?? actor.name}
      actions={
        <button
          type="button"
          className="danger secondary"
          onClick={() => confirm(`Delete ${actor.name}?`) && api("DELETE", `/${plural(kind)}/${id}`).then(() => go(`/${plural(kind)}`), (e) => setError(e))}
        >
          Delete
        </button>
      }
    >
      <p className="muted">
        {typeOf(kind, actor)} · created {when(actor.createdAt)}
      </p>
      <label htmlFor="actor-name">Name</label>
      <input id="actor-name" value={name ?? actor.name} onChange={(e) => setName(e.target.value)} required />
      <ConnectorForm spec={spec} formData={data ?? configuration} onChange={setData} onSubmit={save} serverErrors={errors}>
        <ErrorBox error={error} />
        {saved && <p role="status" className="notice">Saved.</p>}
        <CheckResult check={check} />
        <div className="form-actions">
          <button type="button" className="secondary" onClick={test} disabled={!!busy}>
            Test connection
          </button>
          <button type="submit" disabled={!!busy}>
            {busy ?? "Save and test"}
          </button>
        </div>
      </ConnectorForm>
    </Page>
  );
}
