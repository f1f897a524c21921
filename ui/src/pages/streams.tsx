// The streams step: which streams to sync, each one's sync mode, cursor,
// primary key and fields, from what the source's discover said it supports.

import type { StreamConfiguration, StreamProperties } from "../api";

export type StreamChoice = StreamConfiguration & { selected: boolean };

const MODE_LABELS: Record<string, string> = {
  full_refresh_overwrite: "Full refresh | Overwrite",
  full_refresh_append: "Full refresh | Append",
  incremental_append: "Incremental | Append",
  incremental_deduped_history: "Incremental | Append + Deduped",
};

const needsCursor = (mode: string) => mode.startsWith("incremental");
const needsKey = (mode: string) => mode === "incremental_deduped_history";

/** The choices a stream starts with: its current configuration, else what the source suggests. */
export function initialChoices(properties: StreamProperties[], current: StreamConfiguration[] | null): StreamChoice[] {
  return properties.map((p) => {
    const existing = current?.find((c) => c.name === p.streamName && (c.namespace ?? null) === (p.streamnamespace ?? null));
    if (existing) return { ...existing, selected: true };
    const incremental = p.syncModes.includes("incremental_append");
    const cursor = p.defaultCursorField.length > 0;
    const key = p.sourceDefinedPrimaryKey.length > 0;
    const syncMode = incremental && cursor ? (key ? "incremental_deduped_history" : "incremental_append") : "full_refresh_overwrite";
    return {
      name: p.streamName,
      namespace: p.streamnamespace ?? undefined,
      syncMode,
      cursorField: cursor ? p.defaultCursorField : [],
      primaryKey: p.sourceDefinedPrimaryKey,
      selected: current === null,
    };
  });
}

/** What the API takes: the selected streams, without what their mode does not use. */
export function toConfigurations(choices: StreamChoice[], properties: StreamProperties[]): StreamConfiguration[] {
  return choices
    .filter((c) => c.selected)
    .map(({ selected: _selected, ...c }) => {
      const p = properties.find((p) => p.streamName === c.name);
      const out: StreamConfiguration = { name: c.name, syncMode: c.syncMode };
      if (c.namespace) out.namespace = c.namespace;
      if (needsCursor(c.syncMode) && !p?.sourceDefinedCursorField && c.cursorField?.length) out.cursorField = c.cursorField;
      if (needsKey(c.syncMode) && !p?.sourceDefinedPrimaryKey.length && c.primaryKey?.length) out.primaryKey = c.primaryKey;
      if (c.selectedFields?.length) out.selectedFields = c.selectedFields;
      return out;
    });
}

/** Why the choices cannot be saved, if they cannot. */
export function streamProblems(choices: StreamChoice[], properties: StreamProperties[]): string[] {
  const problems: string[] = [];
  if (!choices.some((c) => c.selected)) problems.push("Select at least one stream.");
  for (const c of choices.filter((c) => c.selected)) {
    const p = properties.find((p) => p.streamName === c.name);
    if (needsCursor(c.syncMode) && !p?.sourceDefinedCursorField && !c.cursorField?.length) problems.push(`${c.name}: choose a cursor field for incremental sync.`);
    if (needsKey(c.syncMode) && !p?.sourceDefinedPrimaryKey.length && !c.primaryKey?.length) problems.push(`${c.name}: choose a primary key to deduplicate on.`);
  }
  return problems;
}

export function StreamsEditor({ properties, choices, onChange }: { properties: StreamProperties[]; choices: StreamChoice[]; onChange: (c: StreamChoice[]) => void }) {
  const update = (i: number, change: Partial<StreamChoice>) => onChange(choices.map((c, j) => (i === j ? { ...c, ...change } : c)));
  const all = choices.every((c) => c.selected);
  return (
    <div className="streams">
      <label className="check">
        <input type="checkbox" checked={all} onChange={() => onChange(choices.map((c) => ({ ...c, selected: !all })))} /> Sync all {choices.length} streams
      </label>
      {choices.map((c, i) => {
        const p = properties[i];
        const fields = p.propertyFields.map((f) => f[0]);
        const id = `stream-${i}`;
        const kept = new Set((c.selectedFields ?? []).map((f) => f.fieldPath[0]));
        const required = new Set([...(c.cursorField ?? []).slice(0, 1), ...(c.primaryKey ?? []).map((k) => k[0])]);
        return (
          <fieldset key={`${c.namespace ?? ""}.${c.name}`} className={`stream ${c.selected ? "" : "off"}`} aria-label={`Stream ${c.name}`}>
            <label className="check stream-name">
              <input type="checkbox" checked={c.selected} onChange={(e) => update(i, { selected: e.target.checked })} aria-label={`Sync stream ${c.name}`} />
              <strong>{c.name}</strong>
              {c.namespace && <span className="muted"> ({c.namespace})</span>}
            </label>
            {c.selected && (
              <div className="stream-options">
                <div>
                  <label htmlFor={`${id}-mode`}>Sync mode</label>
                  <select id={`${id}-mode`} value={c.syncMode} onChange={(e) => update(i, { syncMode: e.target.value })}>
                    {p.syncModes.map((m) => (
                      <option key={m} value={m}>
                        {MODE_LABELS[m] ?? m}
                      </option>
                    ))}
                  </select>
                </div>
                {needsCursor(c.syncMode) && (
                  <div>
                    <label htmlFor={`${id}-cursor`}>Cursor</label>
                    {p.sourceDefinedCursorField ? (
                      <span id={`${id}-cursor`} className="muted">defined by the source{p.defaultCursorField.length ? `: ${p.defaultCursorField.join(".")}` : ""}</span>
                    ) : (
                      <select id={`${id}-cursor`} value={c.cursorField?.[0] ?? ""} onChange={(e) => update(i, { cursorField: e.target.value ? [e.target.value] : [] })}>
                        <option value="">Choose a field</option>
                        {fields.map((f) => (
                          <option key={f}>{f}</option>
                        ))}
                      </select>
                    )}
                  </div>
                )}
                {needsKey(c.syncMode) && (
                  <div>
                    <label htmlFor={`${id}-key`}>Primary key</label>
                    {p.sourceDefinedPrimaryKey.length ? (
                      <span id={`${id}-key`} className="muted">defined by the source: {p.sourceDefinedPrimaryKey.map((k) => k.join(".")).join(", ")}</span>
                    ) : (
                      <select id={`${id}-key`} value={c.primaryKey?.[0]?.[0] ?? ""} onChange={(e) => update(i, { primaryKey: e.target.value ? [[e.target.value]] : [] })}>
                        <option value="">Choose a field</option>
                        {fields.map((f) => (
                          <option key={f}>{f}</option>
                        ))}
                      </select>
                    )}
                  </div>
                )}
                {fields.length > 0 && (
                  <details className="fields">
                    <summary>
                      Fields: {kept.size ? `${kept.size} of ${fields.length}` : `all ${fields.length}`}
                    </summary>
                    {fields.map((f) => (
                      <label key={f} className="check">
                        <input
                          type="checkbox"
                          checked={kept.size === 0 || kept.has(f) || required.has(f)}
                          disabled={required.has(f)}
                          onChange={(e) => {
                            const now = new Set(kept.size ? kept : fields);
                            if (e.target.checked) now.add(f);
                            else now.delete(f);
                            required.forEach((r) => now.add(r));
                            const list = fields.filter((x) => now.has(x));
                            update(i, { selectedFields: list.length === fields.length ? undefined : list.map((x) => ({ fieldPath: [x] })) });
                          }}
                        />{" "}
                        {f}
                      </label>
                    ))}
                  </details>
                )}
              </div>
            )}
          </fieldset>
        );
      })}
    </div>
  );
}
