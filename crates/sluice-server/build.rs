//! Builds the demo page's bundle (web/ with mediasoup-client and protoo-client, by esbuild) into
//! OUT_DIR so `sluice serve` embeds it: `npm ci` in web/ when its node_modules is missing, then
//! `node web/build.mjs`. Without Node.js or npm the server still builds, with a page saying what
//! is missing. `SLUICE_SKIP_WEB_BUILD=1` skips it on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("app.js");
    for path in [
        "src",
        "index.html",
        "build.mjs",
        "package.json",
        "package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=SLUICE_SKIP_WEB_BUILD");
    if std::env::var_os("SLUICE_SKIP_WEB_BUILD").is_some() {
        placeholder(&out, "the bundle was skipped (SLUICE_SKIP_WEB_BUILD)");
        return;
    }
    if let Err(reason) = build(&web, &out) {
        println!("cargo:warning=demo page not built: {reason}");
        placeholder(&out, &reason);
    }
}

fn build(web: &Path, out: &Path) -> Result<(), String> {
    if !web.join("node_modules/.package-lock.json").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(web))?;
    }
    run(Command::new("node")
        .arg(web.join("build.mjs"))
        .arg("--outfile")
        .arg(out))
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn placeholder(out: &Path, reason: &str) {
    let js = format!(
        "document.addEventListener('DOMContentLoaded',()=>{{document.body.insertAdjacentHTML('afterbegin','<p style=\"color:#b00\">The demo bundle was not built: '+{}+'. Install Node.js and npm, then rebuild.</p>');}});",
        serde_json_string(reason)
    );
    let _ = std::fs::write(out, js);
}

/// A JavaScript string literal (JSON's escaping).
fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
