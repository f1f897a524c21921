//! Sluice's web app, as Vite built it from `ui/` when this crate was
//! compiled. The app is static files that call the public API v1 from the
//! browser, so any binary that serves the Config API can serve it too.

pub struct Asset {
    /// Relative to the app's root, `/`-separated: `index.html`, `assets/index-3f2a.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The same bytes gzipped, where that is smaller.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Whether the app was built into this binary (`ui/dist` existed at compile time).
pub fn built() -> bool {
    !ASSETS.is_empty()
}

pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.binary_search_by(|a| a.path.cmp(path)).ok().map(|i| &ASSETS[i])
}

/// Served at `/` by a binary compiled before the app was built.
pub const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sluice</title></head><body>\
<h1>Sluice</h1><p>This binary was compiled without its web app. Build the app, then the binary again:</p>\
<pre>npm --prefix ui ci\nnpm --prefix ui run build\ncargo build --release -p sluice-cli</pre>\
<p>The API is served all the same: <a href=\"api/public/v1/openapi.json\">api/public/v1/openapi.json</a>.</p></body></html>";

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_sorted_for_lookup() {
        assert!(super::ASSETS.windows(2).all(|w| w[0].path < w[1].path));
        if super::built() {
            assert!(super::asset("index.html").is_some());
        }
    }
}
