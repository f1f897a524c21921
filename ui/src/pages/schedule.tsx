import { useEffect, useState } from "react";
import { get, query, type Schedule } from "../api";
import { browserTimeZone, errorText, when } from "../util";

export function scheduleText(s: Schedule): string {
  if (s.scheduleType !== "cron" || !s.cronExpression) return "Manual";
  return `Cron ${s.cronExpression} (${s.cronTimeZone ?? "UTC"})`;
}

/** The next `count` times a cron expression fires, from the server's own cron reader. */
function nextRuns(cronExpression: string, cronTimeZone: string, count: number): Promise<string[]> {
  return get<{ nextRuns: string[] }>(`/schedules/preview${query({ cronExpression, cronTimeZone, count })}`).then((r) => r.nextRuns);
}

export async function nextRun(s: Schedule): Promise<string | null> {
  if (s.scheduleType !== "cron" || !s.cronExpression) return null;
  return (await nextRuns(s.cronExpression, s.cronTimeZone ?? "UTC", 1))[0] ?? null;
}

const ZONES: string[] = (Intl as any).supportedValuesOf?.("timeZone") ?? ["UTC"];

/** Manual or cron, with the time zone and the next fire times from the server's own cron reader. */
export function ScheduleEditor({ value, onChange }: { value: Schedule; onChange: (s: Schedule) => void }) {
  const cron = value.scheduleType === "cron";
  const expression = value.cronExpression ?? "";
  const zone = value.cronTimeZone ?? browserTimeZone();
  const [preview, setPreview] = useState<{ runs?: string[]; error?: string }>({});
  useEffect(() => {
    if (!cron || !expression.trim()) return setPreview({});
    const timer = window.setTimeout(() => {
      nextRuns(expression, zone, 3).then(
        (runs) => setPreview({ runs }),
        (e) => setPreview({ error: errorText(e) }),
      );
    }, 300);
    return () => window.clearTimeout(timer);
  }, [cron, expression, zone]);
  return (
    <fieldset>
      <legend>Schedule</legend>
      <div className="radios">
        <label>
          <input type="radio" name="schedule-type" checked={!cron} onChange={() => onChange({ scheduleType: "manual" })} /> Manual
        </label>
        <label>
          <input
            type="radio"
            name="schedule-type"
            checked={cron}
            onChange={() => onChange({ scheduleType: "cron", cronExpression: expression || "0 0 * * * ?", cronTimeZone: zone })}
          />{" "}
          Cron
        </label>
      </div>
      {cron && (
        <>
          <label htmlFor="cron-expression">Cron expression (Quartz: seconds minutes hours day-of-month month day-of-week)</label>
          <input
            id="cron-expression"
            value={expression}
            onChange={(e) => onChange({ ...value, cronExpression: e.target.value, cronTimeZone: zone })}
            aria-invalid={preview.error ? true : undefined}
            aria-describedby="cron-preview"
          />
          <label htmlFor="cron-zone">Time zone</label>
          <select id="cron-zone" value={zone} onChange={(e) => onChange({ ...value, cronTimeZone: e.target.value })}>
            {(ZONES.includes(zone) ? ZONES : [zone, ...ZONES]).map((z) => (
              <option key={z}>{z}</option>
            ))}
          </select>
          <div id="cron-preview" aria-live="polite">
            {preview.error ? (
              <p className="field-error">{preview.error}</p>
            ) : preview.runs ? (
              <p className="muted">Next runs (your time): {preview.runs.map(when).join(" · ")}</p>
            ) : null}
          </div>
        </>
      )}
    </fieldset>
  );
}
