//! The tests' Docker engine and images: the engine `DOCKER_HOST` names
//! and the images `task-images/build-images.sh` built (`tests/run` starts
//! and builds both), plus the fixtures' own images, built on first use.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use sluice_launcher::docker::{tar, Engine, EngineBody, TarFile};

/// An image's name, from `tests/run`'s environment or the env file
/// `task-images/build-images.sh` writes.
pub fn image(var: &str) -> String {
    if let Ok(name) = std::env::var(var) {
        return name;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/images.env");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(&format!("{var}=")).map(str::to_owned)).unwrap_or_else(|| {
        panic!("no {var}: these tests need a Docker engine (DOCKER_HOST) and the images task-images/build-images.sh builds; ./tests/run starts and builds both")
    })
}

pub fn engine() -> Engine {
    Engine { socket: sluice_launcher::docker::default_socket(), timeout: Duration::from_secs(30) }
}

/// The name under which the scripted source (`tests/fixtures/scripted_source.py`)
/// is an image, as a user would publish a connector of their own.
pub const SCRIPTED_SOURCE_IMAGE: &str = "example/scripted-source:1.0.0";

/// Builds the scripted source's image once per test binary, in Airbyte's
/// Python layout on the Debian base `build-images.sh` made: the engine's
/// build endpoint with a context of two files, nothing fetched.
pub fn scripted_source_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let base = image("SLUICE_PYTHON_BASE_IMAGE");
        let dockerfile = format!(
            "FROM {base}\nCOPY main.py /airbyte/integration_code/main.py\nENV AIRBYTE_ENTRYPOINT=\"python3 /airbyte/integration_code/main.py\"\nUSER 1000:1000\nENTRYPOINT [\"python3\", \"/airbyte/integration_code/main.py\"]\n"
        );
        let script = std::fs::read(super::fixture("scripted_source.py")).unwrap();
        let file = |name: &str, data: Vec<u8>| TarFile { name: name.into(), data, mode: 0o644, uid: 0 };
        let context = tar(&[file("Dockerfile", dockerfile.into_bytes()), file("main.py", script)]);
        let path = format!("/build?t={}&rm=1&forcerm=1", sluice_launcher::docker::encode(SCRIPTED_SOURCE_IMAGE));
        let engine = Engine { timeout: Duration::from_secs(300), ..engine() };
        let (status, body) = engine.request("POST", &path, &EngineBody::Tar(context)).unwrap();
        // The build streams JSON lines; a failed step is an `error` among them.
        let failed = body.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok()).find_map(|v| v["error"].as_str().map(String::from));
        assert!(status == 200 && failed.is_none(), "building {SCRIPTED_SOURCE_IMAGE} failed ({status}): {failed:?} {}", String::from_utf8_lossy(&body));
    });
    SCRIPTED_SOURCE_IMAGE
}
