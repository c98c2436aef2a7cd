//! Drives the real libsignal from Rust tests, through `node/harness.mjs` and
//! `@signalapp/libsignal-client`. The line protocol is described in
//! `README.md` beside this file.
//!
//! Include it from an integration test with
//! `#[path = "interop/harness.rs"] mod harness;`.

// Shared by several test crates, each of which uses only part of it.
#![allow(dead_code)]
// Test support: a broken harness (node crashed, garbled output, a field that
// is not base64) is a test failure, so it panics rather than return an error a
// test might mistake for one from libsignal.
#![allow(clippy::panic, clippy::expect_used)]

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Once;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// How long one request may take before the harness is declared hung.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// An error reported by the Node side: libsignal's error kind (its `ErrorCode`
/// name, e.g. `DuplicatedMessage`, `UntrustedIdentity`, `Generic`) or the
/// harness's own (`BadRequest`, `UnknownParty`, `BadMac`, `BadDigest`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError {
    /// The error kind.
    pub kind: String,
    /// libsignal's (or the harness's) message.
    pub message: String,
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for HarnessError {}

/// The libsignal-client versions pinned in `node/package.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Libsignal {
    /// 0.90.0: no address binding; SPQR offered with fallback allowed.
    V0_90,
    /// 0.103.0: PreKey messages bind both addresses; SPQR required.
    V0_103,
}

impl Libsignal {
    /// The exact version, as `harness.mjs --libsignal` takes it.
    pub fn version(self) -> &'static str {
        match self {
            Libsignal::V0_90 => "0.90.0",
            Libsignal::V0_103 => "0.103.0",
        }
    }

    /// Where npm installs it (0.103.0 through an npm alias).
    fn package(self) -> &'static str {
        match self {
            Libsignal::V0_90 => "@signalapp/libsignal-client",
            Libsignal::V0_103 => "libsignal-0103",
        }
    }
}

/// A running `node harness.mjs`, killed on drop.
pub struct Harness {
    child: Child,
    stdin: ChildStdin,
    responses: Receiver<String>,
    next_id: u64,
}

impl Harness {
    /// The directory holding `package.json` and `harness.mjs`.
    pub fn node_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node")
    }

    /// Starts the harness on libsignal-client 0.90.0; see [`Self::spawn_version`].
    pub fn spawn() -> Option<Harness> {
        Self::spawn_version(Libsignal::V0_90)
    }

    /// Starts the harness on the given libsignal-client, or returns `None`
    /// (after saying so on stderr) when Node or the npm packages are missing.
    /// Under `CI` it panics instead: CI must run these tests, never skip them.
    pub fn spawn_version(libsignal: Libsignal) -> Option<Harness> {
        match Self::try_spawn(libsignal) {
            Ok(harness) => Some(harness),
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("libsignal interop harness unavailable in CI: {why}")
            }
            Err(why) => {
                // Written to the stderr handle itself: libtest captures
                // eprintln!, and a skip must be seen.
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    let _ = writeln!(
                        std::io::stderr(),
                        "libsignal interop tests skipped ({why}); enable them with \
                         `npm ci --prefix crates/signal/tests/interop/node`"
                    );
                });
                None
            }
        }
    }

    fn try_spawn(libsignal: Libsignal) -> Result<Harness, String> {
        let dir = Self::node_dir();
        let package = dir
            .join("node_modules")
            .join(libsignal.package())
            .join("package.json");
        if !package.is_file() {
            return Err(format!("{} not found", package.display()));
        }
        match Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`node --version` failed: {}", out.status)),
            Err(err) => return Err(format!("cannot run `node`: {err}")),
        }

        let mut child = Command::new("node")
            .arg("harness.mjs")
            .arg("--libsignal")
            .arg(libsignal.version())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("cannot start node harness.mjs: {err}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;

        // A reader thread lets `call` time out instead of hanging forever.
        let (tx, responses) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut harness = Harness {
            child,
            stdin,
            responses,
            next_id: 0,
        };
        // Proves libsignal's native module actually loads on this machine.
        match harness.try_call(serde_json::json!({ "op": "ping" })) {
            Ok(Ok(pong)) if pong["version"] == libsignal.version() => Ok(harness),
            Ok(Ok(pong)) => Err(format!(
                "harness runs libsignal {}, expected {}",
                pong["version"],
                libsignal.version()
            )),
            Ok(Err(err)) => Err(format!("ping failed: {err}")),
            Err(why) => Err(format!("harness did not start: {why}")),
        }
    }

    /// Sends one request (`{"op": ..., fields}`; the `id` is added here) and
    /// returns the response's fields, without `id` and `ok`, or the error the
    /// Node side reported.
    pub fn call(&mut self, request: Value) -> Result<Value, HarnessError> {
        let op = request.get("op").cloned().unwrap_or(Value::Null);
        match self.try_call(request) {
            Ok(response) => response,
            Err(why) => panic!("libsignal interop harness failed on op {op}: {why}"),
        }
    }

    /// The transport: the outer error is the harness itself failing.
    fn try_call(&mut self, mut request: Value) -> Result<Result<Value, HarnessError>, String> {
        self.next_id += 1;
        let id = self.next_id;
        request
            .as_object_mut()
            .ok_or("a request must be a JSON object")?
            .insert("id".into(), id.into());

        let mut line = request.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|err| format!("writing request: {err}"))?;

        let line = self
            .responses
            .recv_timeout(RESPONSE_TIMEOUT)
            .map_err(|err| format!("no response: {err}"))?;
        let mut response: Value =
            serde_json::from_str(&line).map_err(|err| format!("bad response {line:?}: {err}"))?;
        let fields = response
            .as_object_mut()
            .ok_or_else(|| format!("response is not an object: {line}"))?;
        if fields.remove("id") != Some(id.into()) {
            return Err(format!("response to the wrong request: {line}"));
        }
        match fields.remove("ok") {
            Some(Value::Bool(true)) => Ok(Ok(response)),
            Some(Value::Bool(false)) => {
                let text = |key: &str| {
                    response["error"][key]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                };
                Ok(Err(HarnessError {
                    kind: text("kind"),
                    message: text("message"),
                }))
            }
            _ => Err(format!("response without ok: {line}")),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Errors only mean the child is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard padded base64, as the line protocol carries byte strings.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a base64 field of a response; panics if it is missing or malformed.
pub fn unb64(field: &Value) -> Vec<u8> {
    let text = field
        .as_str()
        .unwrap_or_else(|| panic!("expected a base64 string, got {field}"));
    STANDARD
        .decode(text)
        .unwrap_or_else(|err| panic!("bad base64 {text:?}: {err}"))
}
