//! Control channels to a VM: the QEMU guest agent (commands and files in the
//! guest, over virtio-serial) and QMP (the VM itself: pause, resume, quit).
//! Both speak line-delimited JSON over a unix socket.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a command run in the guest returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// One JSON-lines connection.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(path: &Path, timeout: Duration) -> Result<Conn> {
        let s =
            UnixStream::connect(path).with_context(|| format!("connecting {}", path.display()))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    fn send(&mut self, v: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// Reads the next JSON object, skipping the agent's 0xFF sync marker.
    fn recv(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self.reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                bail!("connection closed");
            }
            let text: Vec<u8> = line.iter().copied().filter(|&b| b != 0xff).collect();
            let text = String::from_utf8_lossy(&text);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            return serde_json::from_str(text)
                .with_context(|| format!("bad JSON from VM: {text:?}"));
        }
    }

    fn set_timeout(&mut self, t: Duration) -> Result<()> {
        self.writer.set_read_timeout(Some(t))?;
        Ok(())
    }
}

/// A guest agent client.
pub struct Agent {
    path: PathBuf,
    conn: Option<Conn>,
    next_id: u64,
}

impl Agent {
    pub fn new(path: PathBuf) -> Agent {
        Agent {
            path,
            conn: None,
            next_id: std::process::id() as u64 * 1000,
        }
    }

    /// Drops the connection (after the VM was restarted).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Opens a connection and synchronises with the agent: stale replies
    /// from an earlier connection are skipped.
    fn connect(&mut self, timeout: Duration) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let mut c = Conn::open(&self.path, timeout)?;
            self.next_id += 1;
            let id = self.next_id;
            c.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))?;
            loop {
                let v = c.recv()?;
                if v["return"].as_u64() == Some(id) {
                    break;
                }
            }
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Sends one command and returns its `return` value.
    pub fn call(&mut self, cmd: &str, args: Value, timeout: Duration) -> Result<Value> {
        let r = (|| {
            let c = self.connect(timeout)?;
            c.set_timeout(timeout)?;
            let mut req = json!({"execute": cmd});
            if !args.is_null() {
                req["arguments"] = args.clone();
            }
            c.send(&req)?;
            c.recv()
        })();
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                self.conn = None;
                return Err(e.context(format!("guest agent call {cmd}")));
            }
        };
        if let Some(err) = v.get("error") {
            bail!(
                "guest agent {cmd}: {}",
                err["desc"].as_str().unwrap_or("error")
            );
        }
        Ok(v["return"].clone())
    }

    /// True once the agent answers.
    pub fn ping(&mut self) -> bool {
        self.call("guest-ping", Value::Null, Duration::from_secs(2))
            .is_ok()
    }

    /// Runs `sh -c script` in the guest and waits for it.
    pub fn exec(&mut self, script: &str, timeout: Duration) -> Result<ExecOutput> {
        self.exec_with_input(script, None, timeout)
    }

    pub fn exec_with_input(
        &mut self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let mut args = json!({
            "path": "/bin/sh",
            "arg": ["-c", script],
            "capture-output": true,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"],
        });
        if let Some(input) = input {
            args["input-data"] = json!(B64.encode(input));
        }
        let pid = self.call("guest-exec", args, Duration::from_secs(30))?["pid"]
            .as_i64()
            .ok_or_else(|| anyhow!("guest-exec returned no pid"))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let st = self.call(
                "guest-exec-status",
                json!({"pid": pid}),
                Duration::from_secs(30),
            )?;
            if st["exited"].as_bool() == Some(true) {
                let text = |k: &str| -> String {
                    st[k]
                        .as_str()
                        .and_then(|s| B64.decode(s).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                // A signal-killed process reports `signal` instead of a code.
                let code = st["exitcode"]
                    .as_i64()
                    .unwrap_or_else(|| 128 + st["signal"].as_i64().unwrap_or(0));
                return Ok(ExecOutput {
                    code,
                    stdout: text("out-data"),
                    stderr: text("err-data"),
                });
            }
            if Instant::now() > deadline {
                bail!("guest command timed out after {timeout:?}: {script}");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Writes a file in the guest.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let t = Duration::from_secs(60);
        let h = self.call("guest-file-open", json!({"path": path, "mode": "w"}), t)?;
        let h = h
            .as_i64()
            .ok_or_else(|| anyhow!("guest-file-open returned no handle"))?;
        for chunk in data.chunks(1 << 20) {
            self.call(
                "guest-file-write",
                json!({"handle": h, "buf-b64": B64.encode(chunk)}),
                t,
            )?;
        }
        self.call("guest-file-close", json!({"handle": h}), t)?;
        Ok(())
    }

    /// Reads a file from the guest.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        let t = Duration::from_secs(60);
        let h = self.call("guest-file-open", json!({"path": path, "mode": "r"}), t)?;
        let h = h
            .as_i64()
            .ok_or_else(|| anyhow!("guest-file-open returned no handle"))?;
        let mut data = Vec::new();
        loop {
            let r = self.call("guest-file-read", json!({"handle": h, "count": 1 << 20}), t)?;
            if let Some(b) = r["buf-b64"].as_str() {
                data.extend(B64.decode(b)?);
            }
            if r["eof"].as_bool() != Some(false) {
                break;
            }
        }
        self.call("guest-file-close", json!({"handle": h}), t)?;
        Ok(data)
    }
}

/// A QMP client: commands to QEMU itself.
pub struct Qmp {
    conn: Conn,
}

impl Qmp {
    pub fn connect(path: &Path) -> Result<Qmp> {
        let mut conn = Conn::open(path, Duration::from_secs(10))?;
        let greeting = conn.recv()?;
        if greeting.get("QMP").is_none() {
            bail!("not a QMP greeting: {greeting}");
        }
        let mut q = Qmp { conn };
        q.call("qmp_capabilities", Value::Null)?;
        Ok(q)
    }

    pub fn call(&mut self, cmd: &str, args: Value) -> Result<Value> {
        let mut req = json!({"execute": cmd});
        if !args.is_null() {
            req["arguments"] = args;
        }
        self.conn.send(&req)?;
        loop {
            let v = self.conn.recv()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(err) = v.get("error") {
                bail!("QMP {cmd}: {}", err["desc"].as_str().unwrap_or("error"));
            }
            return Ok(v["return"].clone());
        }
    }
}
