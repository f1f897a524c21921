//! The source of reset and clear jobs: it has no streams and reads nothing,
//! so the destination overwrites the chosen streams with no records. The
//! platform, not this source, forgets the streams' state once the job
//! succeeds. On ECS it is its own image (`sluice/source-empty`), as any
//! connector a task runs.

/// Runs one command (`spec`, `check`, `discover`, `read`); the exit status.
pub fn main(args: &[String]) -> i32 {
    let message = match args.first().map(String::as_str) {
        Some("spec") => serde_json::json!({"type": "SPEC", "spec": {"connectionSpecification": {"type": "object", "properties": {}}}}),
        Some("check") => serde_json::json!({"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}}),
        Some("discover") => serde_json::json!({"type": "CATALOG", "catalog": {"streams": []}}),
        Some("read") => return 0,
        other => {
            eprintln!("source-empty: unknown command {other:?}; expected spec, check, discover or read");
            return 2;
        }
    };
    println!("{message}");
    0
}
