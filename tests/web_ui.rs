//! The web app (`ui/`), as `sluice up` serves it: its files over HTTP, and
//! the whole of it end to end in Debian's Chromium, driven by
//! playwright-core (`ui/e2e/app.mjs`): sign in, a source through the form
//! generated from Airbyte's source-faker spec (a bad value first), a
//! destination, the connection wizard with one stream deselected, a sync
//! and its log, a long sync cancelled, an expired token. Screenshots of
//! every page land in `target/ui-screenshots/`.
//!
//! Needs `ui/` built and its packages installed (`tests/run` does both),
//! and `chromium` on the PATH.

mod support;

use std::process::Command;

use support::platform::Platform;
use support::Scratch;

fn credentials(p: &Platform) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p.data.join("credentials.json")).unwrap()).unwrap()
}

fn site(p: &Platform) -> String {
    format!("http://127.0.0.1:{}/", p.port)
}

#[test]
fn the_app_is_served_at_the_root_with_its_assets_cached_for_good() {
    let s = Scratch::new();
    let p = Platform::start(&s.path("data"), &[]);
    let agent = support::platform::agent();
    let index = agent.get(&site(&p)).header("accept-encoding", "gzip").call().unwrap();
    assert_eq!(index.status(), 200);
    let header = |r: &ureq::http::Response<ureq::Body>, name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!(header(&index, "content-encoding"), "gzip", "index.html is sent gzipped to a client that takes it");
    assert!(header(&index, "content-security-policy").contains("default-src 'self'"));
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let html = agent.get(&site(&p)).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(
        html.contains("<div id=\"root\">"),
        "the binary was compiled without the web app; build it first: npm --prefix ui ci && npm --prefix ui run build\n{html}"
    );
    let script = html.split("src=\"./").nth(1).and_then(|r| r.split('"').next()).expect("index.html loads a script");
    let asset = agent.get(&format!("{}{script}", site(&p))).call().unwrap();
    assert_eq!(asset.status(), 200, "{script}");
    assert_eq!(header(&asset, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&asset, "cache-control"), "public, max-age=31536000, immutable");
    let mut missing = agent.get(&format!("{}assets/nothing-here.js", site(&p))).call().unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.body_mut().read_to_string().unwrap().contains("/assets/nothing-here.js does not exist"));
}

#[test]
fn the_app_sets_up_runs_and_watches_a_sync_in_chromium() {
    let s = Scratch::new();
    let main = Platform::start(&s.path("main"), &[]);
    // An instance whose tokens expire in 2 s, for the expiry.
    let short = Platform::start(&s.path("short"), &["--token-ttl-secs", "2"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let shots = root.join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let jsonl = s.path("jsonl");
    std::fs::create_dir_all(&jsonl).unwrap();
    let (m, k) = (credentials(&main), credentials(&short));
    let output = Command::new("node")
        .arg("e2e/app.mjs")
        .current_dir(root.join("ui"))
        .env("SLUICE_URL", site(&main))
        .env("SLUICE_CLIENT_ID", m["client_id"].as_str().unwrap())
        .env("SLUICE_CLIENT_SECRET", m["client_secret"].as_str().unwrap())
        .env("SLUICE_SHORT_URL", site(&short))
        .env("SLUICE_SHORT_CLIENT_ID", k["client_id"].as_str().unwrap())
        .env("SLUICE_SHORT_CLIENT_SECRET", k["client_secret"].as_str().unwrap())
        .env("SLUICE_JSONL_DIR", &jsonl)
        .env("SLUICE_SCREENSHOTS", &shots)
        .output()
        .expect("node runs ui/e2e/app.mjs (is Node.js installed, and `npm ci` run in ui/?)");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}\n--- sluice up's log:\n{}", main.log());
    println!("{stdout}screenshots in {}", shots.display());

    // What the browser did is what the platform holds: the wizard's choices, a sync's rows.
    let connections = main.get("/connections");
    let streams: Vec<&str> = connections["data"][0]["configurations"]["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(streams, ["products", "users"], "purchases was deselected in the wizard");
    assert_eq!(connections["data"][0]["name"], "Shop to files, daily", "renamed in the editor");
    assert_eq!(connections["data"][0]["schedule"]["cronExpression"], "0 0 5 * * ?");
    let users = std::fs::read_to_string(jsonl.join("users.jsonl")).unwrap_or_default();
    assert!(users.lines().count() >= 500, "the first sync wrote its 500 users");
    let jobs = main.get(&format!("/jobs?connectionId={}&orderBy=createdAt|ASC", connections["data"][0]["connectionId"].as_str().unwrap()));
    let statuses: Vec<&str> = jobs["data"].as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "cancelled"]);
    assert!(std::fs::read_dir(&shots).unwrap().any(|f| f.unwrap().file_name().to_string_lossy().ends_with("sign-in-expired.png")));
}
