//! Where a connector comes from, and how to run it.
//!
//! A connector is named one of three ways: a path to an executable, the name
//! of one of Sluice's reference connectors, or `pypi:<package>[==version]`
//! for an Airbyte connector published on PyPI, which is installed once into
//! its own virtualenv under the cache directory (with `uv` when there is one,
//! else `python3 -m venv` and pip), as PyAirbyte does.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The reference connectors built into the `sluice` binary.
pub const REFERENCE_CONNECTORS: [&str; 7] = ["source-faker", "destination-jsonl", "destination-dev-null", "source-empty", "destination-postgres", "source-postgres", "destination-s3"];

/// The name of the declarative runner as a connector: `manifest`.
pub const MANIFEST: &str = "manifest";

/// The reference connectors that speak stdio only (the others speak socket mode too).
pub const STDIO_ONLY: [&str; 1] = ["source-empty"];

/// Airbyte's declarative runner: the console script of the CDK on PyPI,
/// at the version Sluice is tested with.
pub const MANIFEST_RUNNER: Runner = Runner { package: "airbyte-cdk", version: "7.39.1", command: "source-declarative-manifest" };

pub struct Runner {
    pub package: &'static str,
    pub version: &'static str,
    pub command: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorRef {
    Executable(PathBuf),
    Reference(String),
    PyPi { package: String, version: Option<String> },
    /// The declarative runner ([`MANIFEST_RUNNER`]); the manifest comes in the config.
    Manifest,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown connector `{0}`\n\nConsider a path to an executable (./my-source), a reference connector ({refs}), or a PyPI package (pypi:airbyte-source-faker)", refs = REFERENCE_CONNECTORS.join(", "))]
    Unknown(String),
    #[error("`{0}` is not a PyPI package name")]
    BadPackage(String),
    #[error("cannot install {package}: {message}")]
    Install { package: String, message: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl std::str::FromStr for ConnectorRef {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if let Some(spec) = text.strip_prefix("pypi:") {
            let (package, version) = match spec.split_once("==") {
                Some((p, v)) => (p, Some(v.to_owned())),
                None => (spec, None),
            };
            // PEP 508 names: letters, digits and `-_.`, starting and ending with a letter or digit.
            let edges_ok = package.starts_with(|c: char| c.is_ascii_alphanumeric()) && package.ends_with(|c: char| c.is_ascii_alphanumeric());
            let valid = edges_ok && package.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            let version_ok = version.as_deref().is_none_or(|v| {
                v.starts_with(|c: char| c.is_ascii_alphanumeric()) && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+-!".contains(c))
            });
            if !valid || !version_ok {
                return Err(Error::BadPackage(spec.to_owned()));
            }
            return Ok(ConnectorRef::PyPi { package: normalize(package), version });
        }
        if text == MANIFEST {
            return Ok(ConnectorRef::Manifest);
        }
        if REFERENCE_CONNECTORS.contains(&text) {
            return Ok(ConnectorRef::Reference(text.to_owned()));
        }
        let path = Path::new(text);
        if text.contains('/') || path.is_file() {
            return Ok(ConnectorRef::Executable(path.to_path_buf()));
        }
        Err(Error::Unknown(text.to_owned()))
    }
}

impl ConnectorRef {
    /// Whether it speaks socket mode: our reference connectors do, but
    /// those in [`STDIO_ONLY`]; any other is taken to speak stdio only.
    pub fn speaks_socket(&self) -> bool {
        matches!(self, ConnectorRef::Reference(name) if !STDIO_ONLY.contains(&name.as_str()))
    }

    /// A short name for logs: `source-faker`, `my-source`.
    pub fn name(&self) -> String {
        match self {
            ConnectorRef::Executable(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string()),
            ConnectorRef::Reference(name) => name.clone(),
            ConnectorRef::PyPi { package, .. } => executable_name(package).to_owned(),
            ConnectorRef::Manifest => MANIFEST_RUNNER.command.to_owned(),
        }
    }

    /// The command that runs the connector, installing it first if it comes from PyPI.
    /// `sluice` is the binary that carries the reference connectors.
    pub fn command(&self, sluice: &Path, cache: &Cache, progress: &mut dyn FnMut(&str)) -> Result<Vec<String>, Error> {
        match self {
            ConnectorRef::Executable(path) => {
                let path = fs::canonicalize(path).map_err(|e| Error::Io(format!("connector {}", path.display()), e))?;
                Ok(vec![path.to_string_lossy().into_owned()])
            }
            ConnectorRef::Reference(name) => Ok(vec![sluice.to_string_lossy().into_owned(), "connector".into(), name.clone()]),
            ConnectorRef::PyPi { package, version } => python_command(cache, package, version.as_deref(), executable_name(package), progress),
            ConnectorRef::Manifest => {
                let runner = MANIFEST_RUNNER;
                python_command(cache, runner.package, Some(runner.version), runner.command, progress)
            }
        }
    }
}

/// `command` from the virtualenv holding `package`, installed on first use.
fn python_command(cache: &Cache, package: &str, version: Option<&str>, command: &str, progress: &mut dyn FnMut(&str)) -> Result<Vec<String>, Error> {
    let venv = cache.python_env(package, version, progress)?;
    let exe = venv.join("bin").join(command);
    if !exe.is_file() {
        let found = list_dir(&venv.join("bin"));
        return Err(Error::Install { package: package.to_owned(), message: format!("it installed no `{command}` command (bin has: {found})") });
    }
    Ok(vec![exe.to_string_lossy().into_owned()])
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_` and `.` become one `-`.
fn normalize(package: &str) -> String {
    let mut out = String::with_capacity(package.len());
    for c in package.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Airbyte's PyPI connectors install a command named like the package
/// without its `airbyte-` prefix: `airbyte-source-faker` -> `source-faker`.
pub fn executable_name(package: &str) -> &str {
    package.strip_prefix("airbyte-").unwrap_or(package)
}

fn list_dir(dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names.join(", ")
}

/// Sluice's cache directory: virtualenvs of PyPI connectors, sync work files.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
    pub fn from_env() -> Self {
        let root = std::env::var_os("SLUICE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sluice")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")))
            .unwrap_or_else(|| std::env::temp_dir().join("sluice-cache"));
        Cache { root }
    }

    /// A virtualenv holding `package` (at `version`, if given), installed on
    /// first use. Concurrent callers wait for one install instead of racing.
    pub fn python_env(&self, package: &str, version: Option<&str>, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, Error> {
        let venvs = self.root.join("venvs");
        fs::create_dir_all(&venvs).map_err(|e| Error::Io(venvs.display().to_string(), e))?;
        let id = match version {
            Some(v) => format!("{package}-{v}"),
            None => package.to_owned(),
        };
        let venv = venvs.join(&id);
        let done = venv.join(".sluice-installed");
        let lock_path = venvs.join(format!("{id}.lock"));
        let lock = File::create(&lock_path).map_err(|e| Error::Io(lock_path.display().to_string(), e))?;
        lock.lock().map_err(|e| Error::Io(lock_path.display().to_string(), e))?;
        if done.exists() {
            return Ok(venv);
        }
        let spec = match version {
            Some(v) => format!("{package}=={v}"),
            None => package.to_owned(),
        };
        progress(&format!("installing {spec} into {} (once)", venv.display()));
        let _ = fs::remove_dir_all(&venv);
        let failed = |message: String| Error::Install { package: spec.clone(), message };
        let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
        let venv_text = venv.to_string_lossy().into_owned();
        let venv_python = venv.join("bin/python").to_string_lossy().into_owned();
        // Bytecode compiled once here: a connector process then starts
        // without compiling its imports (Python may not write them back).
        let steps: Vec<Vec<String>> = match find_uv(&python) {
            Some(uv) => vec![
                [uv.clone(), vec!["venv".into(), "--quiet".into(), "--python".into(), python.clone(), venv_text.clone()]].concat(),
                [uv, vec!["pip".into(), "install".into(), "--quiet".into(), "--compile-bytecode".into(), "--python".into(), venv_python, spec.clone()]].concat(),
            ],
            None => vec![
                vec![python.clone(), "-m".into(), "venv".into(), venv_text.clone()],
                vec![venv_python, "-m".into(), "pip".into(), "install".into(), "--quiet".into(), spec.clone()],
            ],
        };
        for step in steps {
            let output = Command::new(&step[0]).args(&step[1..]).output().map_err(|e| failed(format!("cannot run {}: {e}", step[0])))?;
            check(&step, &output).map_err(failed)?;
        }
        File::create(&done).map_err(|e| Error::Io(done.display().to_string(), e))?;
        Ok(venv)
    }
}

/// `uv` as a command, or as the module of the Python we use; `None` if neither.
fn find_uv(python: &str) -> Option<Vec<String>> {
    let works = |cmd: &[&str]| Command::new(cmd[0]).args(&cmd[1..]).arg("--version").output().is_ok_and(|o| o.status.success());
    if works(&["uv"]) {
        return Some(vec!["uv".into()]);
    }
    works(&[python, "-m", "uv"]).then(|| vec![python.into(), "-m".into(), "uv".into()])
}

fn check(step: &[String], output: &Output) -> Result<(), String> {
    if output.status.success() {
        return Ok(());
    }
    let tail = last_lines(&output.stderr, 15);
    Err(format!("`{}` failed ({}):\n{tail}\n\nConsider `pip install uv` for faster, more reliable installs", step.join(" "), output.status))
}

/// The last `n` lines of a program's output, for error messages.
pub fn last_lines(output: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_reference() {
        assert_eq!("source-faker".parse::<ConnectorRef>().unwrap(), ConnectorRef::Reference("source-faker".into()));
        assert_eq!(
            "pypi:airbyte-source-file==0.5.39".parse::<ConnectorRef>().unwrap(),
            ConnectorRef::PyPi { package: "airbyte-source-file".into(), version: Some("0.5.39".into()) }
        );
        assert_eq!("./bin/my-source".parse::<ConnectorRef>().unwrap(), ConnectorRef::Executable("./bin/my-source".into()));
        for bad in ["pypi:bad name", "pypi:..", "pypi:.", "pypi:-x", "pypi:x==", "pypi:x==../y"] {
            assert!(matches!(bad.parse::<ConnectorRef>(), Err(Error::BadPackage(_))), "{bad}");
        }
        assert_eq!(
            "pypi:Airbyte_Source__Faker".parse::<ConnectorRef>().unwrap(),
            ConnectorRef::PyPi { package: "airbyte-source-faker".into(), version: None }
        );
        let unknown = "source-nope".parse::<ConnectorRef>().unwrap_err().to_string();
        assert!(unknown.contains("unknown connector `source-nope`") && unknown.contains("pypi:"), "{unknown}");
    }

    #[test]
    fn pypi_connectors_run_their_console_script() {
        assert_eq!(executable_name("airbyte-source-faker"), "source-faker");
        assert_eq!("pypi:airbyte-source-faker".parse::<ConnectorRef>().unwrap().name(), "source-faker");
    }
}
