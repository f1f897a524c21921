// The public API v1, called from the browser. The access token lives in
// this module only (the tab's memory): never a cookie or localStorage, so
// closing the tab signs out and no other page can read it.

export type FieldError = { field: string; message: string };
export type Problem = { status: number; title: string; detail: string; errors?: FieldError[] };

export class ApiError extends Error {
  constructor(public problem: Problem) {
    super(problem.detail || problem.title);
  }
}

let token: string | null = null;
let expired: () => void = () => {};

/** Called when a request comes back 401: the token has expired or was refused. */
export function onExpired(handler: () => void) {
  expired = handler;
}

export function signedIn() {
  return token !== null;
}

export function signOut() {
  token = null;
}

function url(path: string) {
  // Relative to the page, so the app works under a stage path (`/Prod/`).
  return new URL("api/public/v1" + path, document.baseURI).toString();
}

export async function signIn(clientId: string, clientSecret: string): Promise<void> {
  const response = await fetch(url("/applications/token"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_id: clientId, client_secret: clientSecret, grant_type: "client_credentials" }),
  });
  const body = await readBody(response);
  if (!response.ok) throw new ApiError(asProblem(response, body));
  token = body.access_token;
}

export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const parsed = await readBody(response);
  if (response.status === 401 && token) {
    token = null;
    expired();
  }
  if (!response.ok) throw new ApiError(asProblem(response, parsed));
  return parsed as T;
}

export const get = <T = any>(path: string) => api<T>("GET", path);
export const post = <T = any>(path: string, body?: unknown) => api<T>("POST", path, body ?? {});

async function readBody(response: Response): Promise<any> {
  const text = await response.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}

function asProblem(response: Response, body: any): Problem {
  return {
    status: response.status,
    title: body?.title ?? response.statusText,
    detail: body?.detail ?? body?.message ?? `${response.status} ${response.statusText}`,
    errors: Array.isArray(body?.errors) ? body.errors : undefined,
  };
}

export function query(params: Record<string, string | number | boolean | undefined>) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

// ---- the resources, as the API returns them ---------------------------------

export type Workspace = { workspaceId: string; name: string };
export type Definition = {
  id: string;
  name: string;
  dockerRepository: string;
  dockerImageTag: string;
  sourceType: string | null;
  destinationType: string | null;
  runtime: string;
  language: string | null;
  supportLevel: string | null;
  custom: boolean;
};
export type Actor = {
  sourceId?: string;
  destinationId?: string;
  name: string;
  sourceType?: string;
  destinationType?: string;
  definitionId: string;
  workspaceId: string;
  configuration: Record<string, unknown>;
  createdAt?: number;
};
export type StreamConfiguration = {
  name: string;
  namespace?: string | null;
  syncMode: string;
  cursorField?: string[];
  primaryKey?: string[][];
  selectedFields?: { fieldPath: string[] }[];
};
export type Schedule = { scheduleType: "manual" | "cron"; cronExpression?: string | null; cronTimeZone?: string | null };
export type Connection = {
  connectionId: string;
  name: string;
  sourceId: string;
  destinationId: string;
  workspaceId: string;
  status: "active" | "inactive" | "deprecated";
  schedule: Schedule;
  configurations: { streams: StreamConfiguration[] };
  nonBreakingSchemaUpdatesBehavior: string;
  schemaChange: string;
  dataChannel?: { mode?: string; socketCount?: number };
  createdAt: number;
};
export type Job = {
  jobId: number;
  status: string;
  jobType: string;
  startTime: string;
  connectionId: string;
  lastUpdatedAt: string;
  duration: string | null;
  bytesSynced: number;
  rowsSynced: number;
};
export type StreamStats = { name: string; namespace?: string | null; recordsEmitted: number; recordsCommitted: number; bytesEmitted: number; bytesCommitted: number };
export type Attempt = {
  attempt: number;
  status: string;
  startedAt: string;
  endedAt: string | null;
  recordsEmitted: number;
  bytesEmitted: number;
  recordsCommitted: number;
  bytesCommitted: number;
  streams: StreamStats[];
  failure: { origin?: string; type?: string; message?: string; stream?: string } | null;
};
export type StreamProperties = {
  streamName: string;
  streamnamespace?: string | null;
  syncModes: string[];
  defaultCursorField: string[];
  sourceDefinedCursorField: boolean;
  sourceDefinedPrimaryKey: string[][];
  propertyFields: string[][];
};

export const RUNNING = ["pending", "running", "incomplete"];
