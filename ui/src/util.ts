import { useCallback, useEffect, useRef, useState } from "react";

export type Loaded<T> = { data?: T; error?: Error; loading: boolean; reload: () => void };

/** Loads on mount and whenever `deps` change; again every `everyMs` while `poll` says so. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], poll?: { everyMs: number; while: (data: T | undefined) => boolean }): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const pollRef = useRef(poll);
  pollRef.current = poll;
  useEffect(() => {
    let live = true;
    let timer: number | undefined;
    const run = () => {
      load().then(
        (data) => {
          if (!live) return;
          setState({ data, loading: false });
          const p = pollRef.current;
          if (p && p.while(data)) timer = window.setTimeout(run, p.everyMs);
        },
        (error) => live && setState((s) => ({ data: s.data, error, loading: false })),
      );
    };
    run();
    return () => {
      live = false;
      window.clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return { ...state, reload };
}

/** A time in the browser's own time zone. Accepts ISO text or epoch seconds. */
export function when(t: string | number | null | undefined): string {
  if (t === null || t === undefined || t === "") return "—";
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(date.getTime())) return String(t);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export const browserTimeZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

/** ISO 8601 durations as the API gives them (`PT1H2M3S`) in short words. */
export function duration(iso: string | null | undefined): string {
  if (!iso) return "—";
  const m = /^P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$/.exec(iso);
  if (!m) return iso;
  const [d, h, min, s] = [m[1], m[2], m[3], m[4]].map((x) => (x ? Number(x) : 0));
  const parts = [d && `${d}d`, h && `${h}h`, min && `${min}m`, (s || !(d || h || min)) && `${Math.round(s)}s`].filter(Boolean);
  return parts.join(" ");
}

export function bytes(n: number | null | undefined): string {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export const count = (n: number | null | undefined) => (n ?? 0).toLocaleString();

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
