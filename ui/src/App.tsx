import { useEffect, useState } from "react";
import { get, onExpired, post, signedIn, signOut, type Workspace } from "./api";
import { ErrorBox, Loading } from "./components";
import { go, useRoute } from "./route";
import { SignIn } from "./pages/SignIn";
import { Connections } from "./pages/Connections";
import { ConnectionNew } from "./pages/ConnectionNew";
import { ConnectionPage } from "./pages/ConnectionPage";
import { JobLog } from "./pages/JobLog";
import { ActorList, ActorNew, ActorPage } from "./pages/Actors";
import { Definitions } from "./pages/Definitions";

export type Kind = "source" | "destination";

export function App() {
  const [session, setSession] = useState(signedIn());
  const [expiredNotice, setExpiredNotice] = useState(false);
  useEffect(() => {
    onExpired(() => {
      setExpiredNotice(true);
      setSession(false);
    });
  }, []);
  if (!session) {
    return (
      <SignIn
        expired={expiredNotice}
        onSignedIn={() => {
          setExpiredNotice(false);
          setSession(true);
        }}
      />
    );
  }
  return (
    <Workspaces
      onSignOut={() => {
        signOut();
        setSession(false);
      }}
    />
  );
}

function Workspaces({ onSignOut }: { onSignOut: () => void }) {
  const [workspaces, setWorkspaces] = useState<Workspace[] | null>(null);
  const [chosen, setChosen] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = () =>
    get<{ data: Workspace[] }>("/workspaces?limit=100").then((r) => {
      setWorkspaces(r.data);
      setChosen((c) => c ?? r.data[0]?.workspaceId ?? null);
    }, setError);
  useEffect(() => {
    load();
  }, []);
  if (error) return <ErrorBox error={error} />;
  if (!workspaces) return <Loading what="workspaces" />;
  if (!chosen) return <FirstWorkspace onCreated={load} />;
  return (
    <Shell workspaces={workspaces} workspaceId={chosen} onWorkspace={setChosen} onSignOut={onSignOut}>
      <Routes workspaceId={chosen} />
    </Shell>
  );
}

function FirstWorkspace({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState("Default Workspace");
  const [error, setError] = useState<unknown>(null);
  return (
    <main className="narrow">
      <h1>Create a workspace</h1>
      <p>Sources, destinations and connections belong to a workspace. This instance has none yet.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          post("/workspaces", { name }).then(onCreated, setError);
        }}
      >
        <label htmlFor="workspace-name">Name</label>
        <input id="workspace-name" value={name} onChange={(e) => setName(e.target.value)} required />
        <ErrorBox error={error} />
        <button type="submit">Create workspace</button>
      </form>
    </main>
  );
}

const NAV = [
  ["connections", "Connections"],
  ["sources", "Sources"],
  ["destinations", "Destinations"],
  ["definitions", "Connectors"],
] as const;

function Shell(props: { workspaces: Workspace[]; workspaceId: string; onWorkspace: (id: string) => void; onSignOut: () => void; children: React.ReactNode }) {
  const { parts } = useRoute();
  const section = parts[0] ?? "connections";
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <a className="brand" href="#/connections">
          Sluice
        </a>
        <nav aria-label="Main">
          <ul>
            {NAV.map(([path, label]) => (
              <li key={path}>
                <a href={`#/${path}`} aria-current={section === path ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div className="session">
          {props.workspaces.length > 1 && (
            <label>
              <span className="visually-hidden">Workspace</span>
              <select value={props.workspaceId} onChange={(e) => (props.onWorkspace(e.target.value), go("/connections"))}>
                {props.workspaces.map((w) => (
                  <option key={w.workspaceId} value={w.workspaceId}>
                    {w.name}
                  </option>
                ))}
              </select>
            </label>
          )}
          <button type="button" className="secondary small" onClick={props.onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {props.children}
      </main>
    </div>
  );
}

function Routes({ workspaceId }: { workspaceId: string }) {
  const { parts } = useRoute();
  const [section, id, sub, subId] = parts;
  switch (section ?? "connections") {
    case "connections":
      if (id === "new") return <ConnectionNew workspaceId={workspaceId} />;
      if (id && sub === "jobs" && subId) return <JobLog connectionId={id} jobId={Number(subId)} />;
      if (id) return <ConnectionPage key={id} connectionId={id} workspaceId={workspaceId} />;
      return <Connections workspaceId={workspaceId} />;
    case "sources":
    case "destinations": {
      const kind: Kind = section === "sources" ? "source" : "destination";
      if (id === "new") return <ActorNew key={kind} kind={kind} workspaceId={workspaceId} />;
      if (id) return <ActorPage key={id} kind={kind} id={id} workspaceId={workspaceId} />;
      return <ActorList key={kind} kind={kind} workspaceId={workspaceId} />;
    }
    case "definitions":
      return <Definitions workspaceId={workspaceId} />;
    default:
      return <ErrorBox error={new Error(`No page at #/${parts.join("/")}`)} />;
  }
}
