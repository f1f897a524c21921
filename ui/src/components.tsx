import type { ReactNode } from "react";
import { ApiError } from "./api";

export function Page({ title, actions, children }: { title: string; actions?: ReactNode; children: ReactNode }) {
  return (
    <section className="page" aria-labelledby="page-title">
      <header className="page-header">
        <h1 id="page-title">{title}</h1>
        {actions && <div className="actions">{actions}</div>}
      </header>
      {children}
    </section>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof Error ? error.message : String(error);
  const title = error instanceof ApiError ? error.problem.title : "Error";
  return (
    <div role="alert" className="error">
      <strong>{title}:</strong> {text}
    </div>
  );
}

const TONES: Record<string, string> = {
  succeeded: "ok",
  active: "ok",
  running: "busy",
  pending: "busy",
  incomplete: "warn",
  failed: "bad",
  cancelled: "muted",
  inactive: "muted",
  deprecated: "muted",
  breaking: "bad",
  non_breaking: "warn",
};

export function Status({ value }: { value: string }) {
  return <span className={`status status-${TONES[value] ?? "muted"}`}>{value.replace(/_/g, " ")}</span>;
}

export function Table({ label, head, children }: { label: string; head: string[]; children: ReactNode }) {
  return (
    <div className="table-wrap">
      <table aria-label={label}>
        <thead>
          <tr>
            {head.map((h) => (
              <th key={h} scope="col">
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
