import { useState } from "react";
import { signIn } from "../api";
import { ErrorBox } from "../components";

/** Sign-in with an application's client id and secret (`sluice up` writes the first to credentials.json). */
export function SignIn({ expired, onSignedIn }: { expired: boolean; onSignedIn: () => void }) {
  const [clientId, setClientId] = useState("");
  const [secret, setSecret] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  return (
    <main className="narrow sign-in" id="main">
      <h1>Sign in to Sluice</h1>
      {expired && (
        <p role="status" className="notice">
          Your session has expired. Sign in again.
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          signIn(clientId.trim(), secret).then(onSignedIn, (err) => (setError(err), setBusy(false)));
        }}
      >
        <label htmlFor="client-id">Client id</label>
        <input id="client-id" value={clientId} onChange={(e) => setClientId(e.target.value)} autoComplete="username" required autoFocus />
        <label htmlFor="client-secret">Client secret</label>
        <input id="client-secret" type="password" value={secret} onChange={(e) => setSecret(e.target.value)} autoComplete="current-password" required />
        <p className="muted">
          An application's credentials: <code>sluice up</code> writes the first one's to <code>credentials.json</code> in its data directory.
        </p>
        <ErrorBox error={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
