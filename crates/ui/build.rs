//! Embeds `ui/dist` (Vite's output) when it has been built: each file as
//! it is and, where that is smaller, gzipped, so the server answers
//! `Accept-Encoding: gzip` without compressing at run time. Without a
//! build the crate embeds nothing and says how to build it.

use std::io::Write;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=SLUICE_UI_DIST");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dist = std::env::var_os("SLUICE_UI_DIST").map(PathBuf::from).unwrap_or_else(|| manifest_dir.join("../../ui/dist"));
    println!("cargo::rerun-if-changed={}", dist.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        walk(&dist, &dist, &mut files);
    }
    files.sort();
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (n, relative) in files.iter().enumerate() {
        let path = dist.join(relative);
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let gzip = {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(&body).unwrap();
            encoder.finish().unwrap()
        };
        let gzip = if gzip.len() + 64 < body.len() {
            let gz_path = out_dir.join(format!("asset-{n}.gz"));
            std::fs::write(&gz_path, &gzip).unwrap();
            format!("Some(include_bytes!({:?}))", gz_path.display().to_string())
        } else {
            "None".to_owned()
        };
        code.push_str(&format!(
            "    Asset {{ path: {:?}, content_type: {:?}, body: include_bytes!({:?}), gzip: {gzip} }},\n",
            relative,
            content_type(relative),
            path.canonicalize().unwrap().display().to_string(),
        ));
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("assets.rs"), code).unwrap();
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).unwrap().components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            files.push(relative);
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
