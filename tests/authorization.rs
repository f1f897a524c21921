//! Workspaces kept apart, route by route: every operation of the OpenAPI
//! document the server publishes, called by an application of each role
//! (the instance's admin; the admin, an editor and a reader of workspace A;
//! the admin of workspace B) on workspace A's resources. B's admin finds
//! none of them (404, as for ids that do not exist), a reader cannot write
//! (403), an editor cannot administer (403), and what is allowed reaches
//! its handler. Lists are narrowed to the caller's workspace.

mod support;

use std::time::Duration;

use serde_json::json;
use support::platform::Platform;
use support::test_api::manifest;
use support::Scratch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Reaches its handler: anything but 401, 403 and a 404 of access.
    Allowed,
    Forbidden,
    Hidden,
}

struct Caller {
    name: &'static str,
    token: String,
    /// Whether its workspace is A, the one every request aims at.
    of_a: bool,
    role: &'static str,
}

/// The operations only the instance's admins may use, and those only a
/// workspace's admins (and the instance's) may use.
const INSTANCE_ONLY: &[&str] = &["POST /workspaces", "POST /definitions/import", "POST /definitions/{definitionId}/version"];
const ADMIN_ONLY: &[&str] = &[
    "PATCH /workspaces/{workspaceId}", "DELETE /workspaces/{workspaceId}", "GET /applications", "POST /applications",
    "POST /workspaces/{workspaceId}/definitions/sources", "PUT /workspaces/{workspaceId}/definitions/sources/{definitionId}",
    "DELETE /workspaces/{workspaceId}/definitions/sources/{definitionId}", "POST /workspaces/{workspaceId}/definitions/destinations",
    "PUT /workspaces/{workspaceId}/definitions/destinations/{definitionId}", "DELETE /workspaces/{workspaceId}/definitions/destinations/{definitionId}",
];
/// Operations that aim at no workspace's resource (the rest name A's).
const UNAIMED: &[&str] = &[
    "GET /applications", "POST /applications", "GET /workspaces", "POST /workspaces", "GET /sources", "GET /destinations", "GET /connections",
    "GET /schedules/preview", "POST /definitions/import", "POST /definitions/{definitionId}/version",
];

fn expected(caller: &Caller, op: &str) -> Expect {
    let write = !op.starts_with("GET ");
    match caller.role {
        "instance_admin" => Expect::Allowed,
        _ if !caller.of_a && !UNAIMED.contains(&op) => Expect::Hidden,
        _ if INSTANCE_ONLY.contains(&op) => Expect::Forbidden,
        "workspace_admin" => Expect::Allowed,
        _ if ADMIN_ONLY.contains(&op) => Expect::Forbidden,
        "workspace_editor" => Expect::Allowed,
        _ if write => Expect::Forbidden,
        _ => Expect::Allowed,
    }
}

fn token(p: &Platform, client_id: &str, secret: &str) -> String {
    let (status, body) = p.call("POST", "/applications/token", Some(&json!({"client_id": client_id, "client_secret": secret})), None);
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn application(p: &Platform, name: &str, role: &str, workspace: &str) -> String {
    let made = p.post("/applications", json!({"name": name, "permissionType": role, "workspaceId": workspace}));
    assert_eq!(made["permissionType"], role);
    token(p, made["clientId"].as_str().unwrap(), made["clientSecret"].as_str().unwrap())
}

#[test]
fn every_operation_for_every_role_keeps_workspaces_apart() {
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let (a, b) = (p.workspace("A"), p.workspace("B"));
    let faker = |ws: &str| p.actor("source", ws, "sluice-faker", json!({"count": 20}));
    let null = |ws: &str| p.actor("destination", ws, "dev-null", json!({}));
    let connect = |s: &str, d: &str| {
        let streams = json!({"streams": [{"name": "users", "syncMode": "full_refresh_overwrite"}]});
        p.post("/connections", json!({"sourceId": s, "destinationId": d, "configurations": streams}))["connectionId"].as_str().unwrap().to_owned()
    };
    let (source, destination) = (faker(&a), null(&a));
    let connection = connect(&source, &destination);
    let job = p.wait_job(p.sync(&connection), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    let (b_source, b_destination) = (faker(&b), null(&b));
    let b_connection = connect(&b_source, &b_destination);
    let built_in = |kind: &str, type_key: &str| {
        let listed = p.get(&format!("/workspaces/{a}/definitions/{kind}s"));
        let found = listed["data"].as_array().unwrap().iter().find(|d| d[format!("{kind}Type")] == type_key).unwrap()["id"].clone();
        found.as_str().unwrap().to_owned()
    };
    let (source_definition, destination_definition) = (built_in("source", "sluice-faker"), built_in("destination", "dev-null"));
    let declarative = || {
        let made = p.post(&format!("/workspaces/{a}/definitions/declarative_sources"), json!({"name": "Test API", "manifest": manifest()}));
        made["id"].as_str().unwrap().to_owned()
    };
    let declarative_definition = declarative();
    let callers = [
        Caller { name: "instance admin", token: p.token.clone(), of_a: true, role: "instance_admin" },
        Caller { name: "A's admin", token: application(&p, "a-admin", "workspace_admin", &a), of_a: true, role: "workspace_admin" },
        Caller { name: "A's editor", token: application(&p, "a-editor", "workspace_editor", &a), of_a: true, role: "workspace_editor" },
        Caller { name: "A's reader", token: application(&p, "a-reader", "workspace_reader", &a), of_a: true, role: "workspace_reader" },
        Caller { name: "B's admin", token: application(&p, "b-admin", "workspace_admin", &b), of_a: false, role: "workspace_admin" },
    ];

    let (status, document) = p.call("GET", "/openapi.json", None, None);
    assert_eq!(status, 200);
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) && operation.get("security") != Some(&json!([])) {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 50, "the document's operations: {operations:?}");

    let mut checked = 0;
    let mut wrong = Vec::new();
    for (method, template) in &operations {
        let op = format!("{method} {template}");
        for caller in &callers {
            let expect = expected(caller, &op);
            // What an allowed DELETE removes is made for it, in A.
            let (mut target_source, mut target_destination, mut target_connection) = (source.clone(), destination.clone(), connection.clone());
            let mut target_workspace = a.clone();
            let mut definition = match template {
                t if t.contains("/definitions/destinations/") => destination_definition.clone(),
                t if t.contains("/definitions/declarative_sources/") => declarative_definition.clone(),
                _ => source_definition.clone(),
            };
            if method == "DELETE" && expect == Expect::Allowed {
                match template.as_str() {
                    "/sources/{sourceId}" => target_source = faker(&a),
                    "/destinations/{destinationId}" => target_destination = null(&a),
                    "/connections/{connectionId}" => target_connection = connect(&source, &destination),
                    "/workspaces/{workspaceId}/definitions/declarative_sources/{definitionId}" => definition = declarative(),
                    "/workspaces/{workspaceId}" if caller.role == "instance_admin" => target_workspace = p.workspace("throwaway"),
                    // A's admin deletes A itself, last of all (below).
                    "/workspaces/{workspaceId}" => continue,
                    _ => {}
                }
            }
            let path = template
                .replace("{workspaceId}", &target_workspace)
                .replace("{sourceId}", &target_source)
                .replace("{destinationId}", &target_destination)
                .replace("{connectionId}", &target_connection)
                .replace("{jobId}", &job["jobId"].to_string())
                .replace("{attemptNumber}", "0")
                .replace("{definitionId}", &definition);
            let path = match op.as_str() {
                "GET /streams" => format!("{path}?sourceId={source}&destinationId={destination}"),
                "GET /jobs" => format!("{path}?connectionId={connection}"),
                "GET /schedules/preview" => format!("{path}?cronExpression=0%200%2012%20*%20*%20%3F&cronTimeZone=UTC"),
                _ => path,
            };
            // A body that names A's resources and that every handler refuses
            // (an unknown field): what is allowed reaches a 400, not a change.
            let body = (method != "GET" && method != "DELETE")
                .then(|| json!({"probeOfAccess": true, "workspaceId": a, "sourceId": source, "destinationId": destination, "connectionId": connection, "name": "probe"}));
            let (status, answer) = p.call(method, &path, body.as_ref(), Some(&caller.token));
            checked += 1;
            let fine = match expect {
                Expect::Allowed => ![401, 403].contains(&status) && status < 500 && !(status == 404 && answer["detail"].as_str().is_some_and(|d| d.contains("does not exist"))),
                Expect::Forbidden => status == 403,
                Expect::Hidden => status == 404,
            };
            if !fine {
                wrong.push(format!("{op} by {}: expected {expect:?}, got {status} {answer}", caller.name));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {checked} calls were wrong:\n{}", wrong.len(), wrong.join("\n"));
    eprintln!("authorization matrix: {} operations x {} roles, {checked} calls", operations.len(), callers.len());

    // Lists are narrowed to the caller's workspace, and naming another is a 404.
    let listed = |caller: &Caller, path: &str| {
        let (status, body) = p.call("GET", path, None, Some(&caller.token));
        assert_eq!(status, 200, "{path} by {}: {body}", caller.name);
        body.to_string()
    };
    for path in ["/workspaces", "/sources", "/destinations", "/connections", "/jobs", "/applications"] {
        let by_b = listed(&callers[4], path);
        for id in [&a, &source, &destination, &connection] {
            assert!(!by_b.contains(id.as_str()), "{path} shows B's admin A's {id}: {by_b}");
        }
        if path != "/applications" {
            let by_reader = listed(&callers[3], path);
            for id in [&b, &b_source, &b_destination, &b_connection] {
                assert!(!by_reader.contains(id.as_str()), "{path} shows A's reader B's {id}: {by_reader}");
            }
        }
    }
    assert!(listed(&callers[3], "/sources").contains(&source), "A's reader lists A's sources");
    let (status, _) = p.call("GET", &format!("/sources?workspaceIds={a}"), None, Some(&callers[4].token));
    assert_eq!(status, 404, "B's admin naming A");
    let (status, body) = p.call("GET", &format!("/jobs/{}/attempts/0/logs", job["jobId"]), None, Some(&callers[4].token));
    assert_eq!((status, body["detail"].as_str().unwrap_or_default()), (404, format!("job {} does not exist", job["jobId"]).as_str()), "A's job log for B's admin");

    // Applications: a workspace admin makes them for its own workspace, with at most its role.
    let (status, made) = p.call("POST", "/applications", Some(&json!({"name": "r", "permissionType": "workspace_reader"})), Some(&callers[1].token));
    assert_eq!((status, made["workspaceId"].as_str()), (200, Some(a.as_str())), "{made}");
    let (status, _) = p.call("POST", "/applications", Some(&json!({"name": "x", "permissionType": "instance_admin"})), Some(&callers[1].token));
    assert_eq!(status, 403, "no more than its own role");
    let (status, _) = p.call("POST", "/applications", Some(&json!({"name": "x", "workspaceId": b})), Some(&callers[1].token));
    assert_eq!(status, 403, "not for another workspace");

    // A workspace admin's own connectors run in containers: a PyPI package or a program
    // would run on the machine itself, which only the instance's admins may allow.
    let definitions = format!("/workspaces/{a}/definitions/sources");
    let (status, body) = p.call("POST", &definitions, Some(&json!({"name": "mine", "runtime": "pypi:airbyte-source-faker==6.2.0"})), Some(&callers[1].token));
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("outside a container"), "{body}");
    let (status, body) = p.call("POST", &definitions, Some(&json!({"name": "mine", "runtime": "/bin/sh"})), Some(&callers[1].token));
    assert_eq!(status, 403, "{body}");
    let (status, body) = p.call("POST", &definitions, Some(&json!({"name": "mine", "dockerRepository": "me/source-mine", "dockerImageTag": "1.0"})), Some(&callers[1].token));
    assert_eq!(status, 200, "{body}");

    // Last: A's editor deletes A's connection, source and destination, A's admin then A.
    for path in [format!("/connections/{connection}"), format!("/sources/{source}"), format!("/destinations/{destination}")] {
        let (status, body) = p.call("DELETE", &path, None, Some(&callers[2].token));
        assert!(status == 204 || status == 200, "{path}: {status} {body}");
    }
    let left = p.get(&format!("/connections?workspaceIds={a}"));
    assert_eq!(left["data"].as_array().map(Vec::len), Some(0), "the probes made nothing: {left}");
    let (status, body) = p.call("DELETE", &format!("/workspaces/{a}"), None, Some(&callers[1].token));
    assert!(status == 204 || status == 200, "{status} {body}");
}

/// A refusal (no token, a forbidden role) is answered before any handler
/// reads the body. The connection must still be good for the client's next
/// request: clients pool connections, and one the server closed after an
/// early answer fails the next call ("peer disconnected", as a POST that
/// cannot be retried).
#[test]
fn a_refused_request_leaves_its_connection_open_for_the_next() {
    use std::io::{BufRead, BufReader, Read, Write};
    let scratch = Scratch::new();
    let p = Platform::start(&scratch.path("data"), &[]);
    let address = p.base.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let stream = std::net::TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // One body large enough that it cannot sit in one read with the head.
    let body = format!("{{\"name\": \"{}\"}}", "x".repeat(256 * 1024));
    let read_answer = |reader: &mut BufReader<std::net::TcpStream>| -> (String, Vec<String>) {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            headers.push(line.trim().to_ascii_lowercase());
        }
        let mut content = vec![0; length];
        reader.read_exact(&mut content).unwrap();
        (status.trim().to_owned(), headers)
    };
    for round in 0..3 {
        write!(writer, "POST /api/public/v1/workspaces HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
        let (status, headers) = read_answer(&mut reader);
        assert!(status.contains(" 401 "), "round {round}: {status}");
        assert!(!headers.iter().any(|h| h == "connection: close"), "round {round}: the server closes after a refusal: {headers:?}");
        write!(writer, "GET /api/public/v1/health HTTP/1.1\r\nhost: {address}\r\n\r\n")
            .unwrap_or_else(|e| panic!("round {round}: the server closed the connection after its refusal, without saying so: {e}"));
        let (status, _) = read_answer(&mut reader);
        assert!(status.contains(" 200 "), "round {round}: the next request on the connection got `{status}`");
    }
}
