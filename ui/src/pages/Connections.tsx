import { get, query, type Actor, type Connection, type Job } from "../api";
import { Empty, ErrorBox, Loading, Page, Status, Table } from "../components";
import { count, duration, useLoad, when } from "../util";
import { nextRun, scheduleText } from "./schedule";

type Row = { connection: Connection; source?: Actor; destination?: Actor; last?: Job; next?: string | null };

export function Connections({ workspaceId }: { workspaceId: string }) {
  const rows = useLoad(() => loadRows(workspaceId), [workspaceId], { everyMs: 5000, while: () => true });
  return (
    <Page title="Connections" actions={<a className="button" href="#/connections/new">New connection</a>}>
      <ErrorBox error={rows.error} />
      {rows.loading && !rows.data ? (
        <Loading what="connections" />
      ) : rows.data && rows.data.length === 0 ? (
        <Empty>
          <p>No connections yet. A connection moves data from a source to a destination, by hand or on a schedule.</p>
          <a className="button" href="#/connections/new">Set up your first connection</a>
        </Empty>
      ) : (
        <Table label="Connections" head={["Name", "Source → destination", "Status", "Schedule", "Next run", "Last sync", "Rows", "Duration"]}>
          {rows.data?.map(({ connection: c, source, destination, last, next }) => (
            <tr key={c.connectionId}>
              <td>
                <a href={`#/connections/${c.connectionId}`}>{c.name}</a>
              </td>
              <td>
                {source?.name ?? "?"} → {destination?.name ?? "?"}
              </td>
              <td>
                <Status value={c.status} />
                {c.schemaChange && c.schemaChange !== "no_change" && <Status value={c.schemaChange} />}
              </td>
              <td>{scheduleText(c.schedule)}</td>
              <td>{c.status === "active" && next ? when(next) : "—"}</td>
              <td>{last ? <><Status value={last.status} /> <span className="muted">{when(last.startTime)}</span></> : <span className="muted">never</span>}</td>
              <td className="num">{last ? count(last.rowsSynced) : "—"}</td>
              <td>{last ? duration(last.duration) : "—"}</td>
            </tr>
          ))}
        </Table>
      )}
    </Page>
  );
}

async function loadRows(workspaceId: string): Promise<Row[]> {
  const ws = query({ workspaceIds: workspaceId, limit: 100 });
  const [connections, sources, destinations] = await Promise.all([
    get<{ data: Connection[] }>(`/connections${ws}`),
    get<{ data: Actor[] }>(`/sources${ws}`),
    get<{ data: Actor[] }>(`/destinations${ws}`),
  ]);
  return Promise.all(
    connections.data.map(async (connection) => {
      const [jobs, next] = await Promise.all([
        get<{ data: Job[] }>(`/jobs${query({ connectionId: connection.connectionId, limit: 1, orderBy: "createdAt|DESC" })}`),
        nextRun(connection.schedule),
      ]);
      return {
        connection,
        source: sources.data.find((s) => s.sourceId === connection.sourceId),
        destination: destinations.data.find((d) => d.destinationId === connection.destinationId),
        last: jobs.data[0],
        next,
      };
    }),
  );
}
