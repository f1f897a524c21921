import { get, type Definition } from "../api";
import { ErrorBox, Loading, Page, Table } from "../components";
import { useLoad } from "../util";

/** How a definition runs, from its `runtime` (`pypi:…`, `image:…`, `manifest`, a path, or one of Sluice's own connectors). */
export function runtimeText(runtime: string): string {
  const [kind, ...rest] = runtime.split(":");
  const what = rest.join(":");
  switch (kind) {
    case "pypi":
      return `PyPI ${what}`;
    case "image":
      return `Image ${what}`;
    case "manifest":
      return "Manifest (declarative)";
    default:
      return runtime.startsWith("/") ? `Executable ${runtime}` : `Sluice's ${runtime} (built in)`;
  }
}

export function Definitions({ workspaceId }: { workspaceId: string }) {
  const all = useLoad(
    () =>
      Promise.all(["sources", "destinations"].map((k) => get<{ data: Definition[] }>(`/workspaces/${workspaceId}/definitions/${k}`).then((r) => r.data.sort((a, b) => a.name.localeCompare(b.name))))),
    [workspaceId],
  );
  return (
    <Page title="Connectors">
      <ErrorBox error={all.error} />
      {!all.data ? (
        <Loading what="connectors" />
      ) : (
        (["Sources", "Destinations"] as const).map((label, i) => (
          <section key={label} aria-labelledby={`defs-${i}`}>
            <h2 id={`defs-${i}`}>{label}</h2>
            <Table label={`${label} connectors`} head={["Name", "Type", "Version", "Runtime", "Language", "Support", "Origin"]}>
              {all.data![i].map((d) => (
                <tr key={d.id}>
                  <td>{d.name}</td>
                  <td>
                    <code>{d.sourceType ?? d.destinationType}</code>
                  </td>
                  <td>{d.dockerImageTag}</td>
                  <td>{runtimeText(d.runtime)}</td>
                  <td>{d.language ?? "—"}</td>
                  <td>{d.supportLevel ?? "—"}</td>
                  <td>{d.custom ? "this workspace" : "instance"}</td>
                </tr>
              ))}
            </Table>
          </section>
        ))
      )}
    </Page>
  );
}
