//! Lua scripts as callbacks (`--filter-callback-lua-script`, `--preprocess-callback-lua-script`,
//! `--event-callback-lua-script`), with the original s3sync's contract so its users' scripts run
//! unchanged: Lua 5.4, one VM per callback kind shared by all workers and called one at a time, the
//! script compiled once before any transfer, a sandbox by default, a memory limit and a per-call
//! timeout.

use super::{
    rfc3339, CallbackError, EventCallback, EventData, FilterCallback, PreprocessCallback, SourceObject,
    SourceObjectInfo, UploadMetadata,
};
use async_trait::async_trait;
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the Lua VMs are built.
#[derive(Debug, Clone)]
pub struct LuaSettings {
    /// Load `os` and `io` (`--allow-lua-os-library`).
    pub allow_os_library: bool,
    /// Load every library, C modules and binary chunks included (`--allow-lua-unsafe-vm`).
    pub allow_unsafe_vm: bool,
    /// Bytes the VM may allocate; 0: no limit (`--lua-vm-memory-limit`).
    pub memory_limit: u64,
    /// Longest time one call may run; `None`: no limit (`--lua-callback-timeout-milliseconds`).
    pub timeout: Option<Duration>,
    /// Stops a running script when cancelled (within 1000 Lua instructions), so Ctrl-C does not wait
    /// for a slow or endless callback. Give the same token as [`super::Callbacks::interrupt`].
    pub interrupt: tokio_util::sync::CancellationToken,
}

impl Default for LuaSettings {
    fn default() -> Self {
        LuaSettings {
            allow_os_library: false,
            allow_unsafe_vm: false,
            memory_limit: crate::config::defaults::DEFAULT_LUA_VM_MEMORY_LIMIT,
            timeout: Some(Duration::from_millis(
                crate::config::defaults::DEFAULT_LUA_CALLBACK_TIMEOUT_MILLISECONDS,
            )),
            interrupt: tokio_util::sync::CancellationToken::new(),
        }
    }
}

fn timeout_message(ms: u128) -> String {
    format!("Lua callback timed out after {ms}ms")
}

const INTERRUPTED: &str = "Lua callback interrupted: the run is stopping";

/// A Lua VM as `settings` ask for, ready for a script: the libraries allowed, binary chunks refused
/// (unless unsafe), the memory limit, and the hook that ends a call past its deadline (`deadline`,
/// flagging `expired`) or once the run stops, in a way `pcall` cannot catch.
fn prepare_lua(
    settings: &LuaSettings,
    deadline: &Arc<Mutex<Option<Instant>>>,
    expired: &Arc<AtomicBool>,
) -> mlua::Result<Lua> {
    let lua = new_lua(settings)?;
    if !settings.allow_unsafe_vm {
        refuse_binary_chunks(&lua)?;
    }
    if settings.memory_limit > 0 {
        lua.set_memory_limit(settings.memory_limit as usize)?;
    }
    let ms = settings.timeout.map(|t| t.as_millis()).unwrap_or(0);
    set_deadline_hook(&lua, ms, deadline.clone(), expired.clone(), settings.interrupt.clone())?;
    guard_protected_calls(&lua, ms, expired.clone(), settings.interrupt.clone())?;
    Ok(lua)
}

/// A fresh VM with the libraries `settings` allow: every one (unsafe), or the safe ones with or
/// without `os` and `io`.
fn new_lua(settings: &LuaSettings) -> mlua::Result<Lua> {
    Ok(if settings.allow_unsafe_vm {
        // Asked for by name (`--allow-lua-unsafe-vm`): C modules and binary chunks may then break
        // memory safety, as its help says.
        s3sync_sys::unrestricted_lua()
    } else if settings.allow_os_library {
        Lua::new()
    } else {
        Lua::new_with(StdLib::ALL_SAFE ^ (StdLib::OS | StdLib::IO), LuaOptions::default())?
    })
}

/// Makes `load`, `loadfile` and `require` of `lua` load source text only (and removes `dofile`).
fn refuse_binary_chunks(lua: &Lua) -> mlua::Result<()> {
    // Binary chunks bypass the compiler's checks (crafted bytecode corrupts memory): a safe VM
    // loads source text only, through `load`, `loadfile` and `require` alike. Extra arguments
    // (an environment) are passed on only when given: Lua tells nil from absent there.
    lua.load(
        r#"
                local load_, loadfile_ = load, loadfile
                load = function(chunk, name, _, ...)
                  if type(chunk) == "string" and chunk:byte(1) == 27 then
                    error("binary chunks are not loaded in safe mode (--allow-lua-unsafe-vm allows them)", 2)
                  end
                  return load_(chunk, name, "t", ...)
                end
                loadfile = function(file, _, ...) return loadfile_(file, "t", ...) end
                dofile = nil
                if package and package.searchers then
                  package.searchers[2] = function(name)
                    local path, err = package.searchpath(name, package.path)
                    if not path then return err end
                    local f, e = loadfile_(path, "t")
                    if not f then error(e, 2) end
                    return f, path
                  end
                end
                "#,
    )
    .exec()
}

/// Installs the hook that, every 1000 instructions, ends the running call with an error (and sets
/// `expired`) once `stop` is cancelled or the call's `deadline` (of a `ms`-millisecond timeout)
/// has passed.
fn set_deadline_hook(
    lua: &Lua,
    ms: u128,
    deadline: Arc<Mutex<Option<Instant>>>,
    expired: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) -> mlua::Result<()> {
    // Every 1000 instructions: the deadline of this call, and whether the run is stopping.
    lua.set_global_hook(HookTriggers::new().every_nth_instruction(1000), move |_, _| {
        if stop.is_cancelled() {
            expired.store(true, Ordering::SeqCst);
            return Err(mlua::Error::RuntimeError(INTERRUPTED.into()));
        }
        let due = deadline.lock().map(|g| *g).unwrap_or(None);
        match due {
            Some(due) if Instant::now() >= due => {
                expired.store(true, Ordering::SeqCst);
                Err(mlua::Error::RuntimeError(timeout_message(ms)))
            }
            _ => Ok(VmState::Continue),
        }
    })
}

/// Makes `pcall`, `xpcall` and `coroutine.resume` of `lua` raise again the timeout or interruption
/// error once it fired (`expired`), so a script cannot outlive its deadline or the run.
fn guard_protected_calls(
    lua: &Lua,
    ms: u128,
    expired: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) -> mlua::Result<()> {
    // The timeout and the interruption are Lua errors, which `pcall`, `xpcall` and
    // `coroutine.resume` would catch: once one fired they raise it again, so a script cannot
    // outlive its deadline or the run.
    let probe = lua.create_function(move |_, ()| {
        Ok(match (expired.load(Ordering::SeqCst), stop.is_cancelled()) {
            (false, _) => None,
            (true, true) => Some(INTERRUPTED.to_string()),
            (true, false) => Some(timeout_message(ms)),
        })
    })?;
    let guard: mlua::Function = lua
        .load(
            r#"
                local expired = ...
                local pcall_, xpcall_ = pcall, xpcall
                local resume_ = coroutine and coroutine.resume
                local function rethrow(ok, ...)
                  if not ok then
                    local message = expired()
                    if message then error(message, 0) end
                  end
                  return ok, ...
                end
                pcall = function(...) return rethrow(pcall_(...)) end
                xpcall = function(...) return rethrow(xpcall_(...)) end
                if resume_ then coroutine.resume = function(...) return rethrow(resume_(...)) end end
                "#,
        )
        .into_function()?;
    guard.call::<()>(probe)
}

/// One VM with one script loaded. Calls are serialised, each with a fresh deadline.
struct Vm {
    lua: Lua,
    script: PathBuf,
    deadline: Arc<Mutex<Option<Instant>>>,
    /// Set when the timeout fired during the current call.
    expired: Arc<AtomicBool>,
    timeout: Option<Duration>,
    memory_limit: u64,
    turn: tokio::sync::Mutex<()>,
}

impl Vm {
    /// Builds a VM (see [`prepare_lua`]) and runs the script at `path` in it once, which defines
    /// the callback's functions.
    fn load(path: &Path, settings: &LuaSettings) -> Result<Vm, CallbackError> {
        let fail = |m: String| CallbackError(format!("Failed to load and compile Lua script {}: {m}", path.display()));
        let code = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let deadline = Arc::new(Mutex::new(None::<Instant>));
        let expired = Arc::new(AtomicBool::new(false));
        let lua = prepare_lua(settings, &deadline, &expired).map_err(|e| fail(e.to_string()))?;
        let vm = Vm {
            lua,
            script: path.to_path_buf(),
            deadline,
            expired,
            timeout: settings.timeout,
            memory_limit: settings.memory_limit,
            turn: tokio::sync::Mutex::new(()),
        };
        let name = format!("@{}", path.display());
        let chunk = || {
            let c = vm.lua.load(&code[..]).set_name(name);
            // A safe VM compiles source text only, the script itself included.
            let c = if settings.allow_unsafe_vm {
                c
            } else {
                c.set_mode(mlua::ChunkMode::Text)
            };
            c.exec()
        };
        vm.with_deadline(chunk).map_err(|e| fail(vm.describe(&e)))?;
        Ok(vm)
    }

    /// Loads a script that must define the global function `name`.
    fn load_defining(path: &Path, settings: &LuaSettings, name: &str) -> Result<Vm, CallbackError> {
        let vm = Vm::load(path, settings)?;
        match vm.function(name) {
            Some(_) => Ok(vm),
            None => Err(CallbackError(format!(
                "Lua script {} defines no function '{name}'",
                path.display()
            ))),
        }
    }

    /// Runs `f` with the deadline set for one call.
    fn with_deadline<R>(&self, f: impl FnOnce() -> mlua::Result<R>) -> mlua::Result<R> {
        self.expired.store(false, Ordering::SeqCst);
        if let Ok(mut d) = self.deadline.lock() {
            *d = self.timeout.map(|t| Instant::now() + t);
        }
        let r = f();
        if let Ok(mut d) = self.deadline.lock() {
            *d = None;
        }
        r
    }

    /// A Lua error as one line (the first line of its message, without the traceback).
    fn describe(&self, e: &mlua::Error) -> String {
        match e {
            mlua::Error::MemoryError(_) => format!(
                "memory limit of {} bytes exceeded (--lua-vm-memory-limit)",
                self.memory_limit
            ),
            mlua::Error::CallbackError { cause, .. } => self.describe(cause),
            other => other.to_string().lines().next().unwrap_or_default().to_string(),
        }
    }

    fn function(&self, name: &str) -> Option<mlua::Function> {
        self.lua.globals().get::<mlua::Function>(name).ok()
    }

    fn error(&self, what: &str, e: &mlua::Error) -> CallbackError {
        CallbackError(format!(
            "Lua {what} callback error ({}): {}",
            self.script.display(),
            self.describe(e)
        ))
    }
}

fn opt<T: mlua::IntoLua>(lua: &Lua, t: &Table, k: &str, v: Option<T>) -> mlua::Result<()> {
    match v {
        Some(v) => t.set(k, v.into_lua(lua)?),
        None => Ok(()),
    }
}

/// `filter(source_object)` → boolean.
pub struct LuaFilter(Vm);

impl LuaFilter {
    /// Loads and compiles the script; it must define `filter`.
    pub fn load(path: &Path, settings: &LuaSettings) -> Result<Self, CallbackError> {
        Ok(LuaFilter(Vm::load_defining(path, settings, "filter")?))
    }
}

#[async_trait]
impl FilterCallback for LuaFilter {
    async fn filter(&self, o: &SourceObject) -> Result<bool, CallbackError> {
        let vm = &self.0;
        let _turn = vm.turn.lock().await;
        let call = || {
            let lua = &vm.lua;
            let t = lua.create_table()?;
            t.set("key", o.key.as_str())?;
            t.set("size", o.size)?;
            t.set("last_modified", rfc3339(o.last_modified))?;
            opt(lua, &t, "version_id", o.version_id.as_deref())?;
            opt(lua, &t, "e_tag", o.e_tag.as_deref())?;
            opt(lua, &t, "checksum_algorithm", o.checksum_algorithm.as_deref())?;
            opt(lua, &t, "checksum_type", o.checksum_type.as_deref())?;
            t.set("is_latest", o.is_latest)?;
            t.set("is_delete_marker", o.is_delete_marker)?;
            let f: mlua::Function = lua.globals().get("filter")?;
            f.call::<bool>(t)
        };
        vm.with_deadline(call).map_err(|e| vm.error("filter", &e))
    }
}

/// `preprocess_callback(source_object, upload_metadata)` → `ok, upload_metadata`.
pub struct LuaPreprocess(Vm);

impl LuaPreprocess {
    /// Loads and compiles the script; it must define `preprocess_callback`.
    pub fn load(path: &Path, settings: &LuaSettings) -> Result<Self, CallbackError> {
        Ok(LuaPreprocess(Vm::load_defining(path, settings, "preprocess_callback")?))
    }
}

fn source_table(lua: &Lua, s: &SourceObjectInfo) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("key", s.key.as_str())?;
    t.set("content_length", s.content_length)?;
    opt(lua, &t, "last_modified", s.last_modified.map(rfc3339))?;
    opt(lua, &t, "e_tag", s.e_tag.as_deref())?;
    opt(lua, &t, "version_id", s.version_id.as_deref())?;
    opt(lua, &t, "content_type", s.content_type.as_deref())?;
    opt(lua, &t, "cache_control", s.cache_control.as_deref())?;
    opt(lua, &t, "content_disposition", s.content_disposition.as_deref())?;
    opt(lua, &t, "content_encoding", s.content_encoding.as_deref())?;
    opt(lua, &t, "content_language", s.content_language.as_deref())?;
    opt(lua, &t, "expires_string", s.expires_string.as_deref())?;
    opt(
        lua,
        &t,
        "website_redirect_location",
        s.website_redirect_location.as_deref(),
    )?;
    opt(lua, &t, "storage_class", s.storage_class.as_deref())?;
    opt(lua, &t, "tag_count", s.tag_count)?;
    opt(lua, &t, "parts_count", s.parts_count)?;
    opt(lua, &t, "server_side_encryption", s.server_side_encryption.as_deref())?;
    opt(lua, &t, "ssekms_key_id", s.ssekms_key_id.as_deref())?;
    opt(lua, &t, "sse_customer_algorithm", s.sse_customer_algorithm.as_deref())?;
    opt(lua, &t, "checksum_type", s.checksum_type.as_deref())?;
    if let Some((algo, value)) = &s.checksum {
        let field = match algo.as_str() {
            "CRC32" => "checksum_crc32",
            "CRC32C" => "checksum_crc32_c",
            "CRC64NVME" => "checksum_crc64_nvme",
            "SHA1" => "checksum_sha1",
            _ => "checksum_sha256",
        };
        t.set(field, value.as_str())?;
    }
    t.set("metadata", lua.create_table_from(s.metadata.clone())?)?;
    Ok(t)
}

fn upload_table(lua: &Lua, u: &UploadMetadata) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    opt(lua, &t, "acl", u.acl.as_deref())?;
    opt(lua, &t, "cache_control", u.cache_control.as_deref())?;
    opt(lua, &t, "content_disposition", u.content_disposition.as_deref())?;
    opt(lua, &t, "content_encoding", u.content_encoding.as_deref())?;
    opt(lua, &t, "content_language", u.content_language.as_deref())?;
    opt(lua, &t, "content_type", u.content_type.as_deref())?;
    opt(lua, &t, "expires_string", u.expires_string.as_deref())?;
    opt(lua, &t, "request_payer", u.request_payer.as_deref())?;
    opt(lua, &t, "storage_class", u.storage_class.as_deref())?;
    opt(
        lua,
        &t,
        "website_redirect_location",
        u.website_redirect_location.as_deref(),
    )?;
    opt(lua, &t, "tagging", u.tagging.as_deref())?;
    t.set("metadata", lua.create_table_from(u.metadata.clone())?)?;
    Ok(t)
}

fn read_upload_table(t: &Table) -> mlua::Result<UploadMetadata> {
    let s = |k: &str| t.get::<Option<String>>(k);
    let metadata = match t.get::<Value>("metadata")? {
        Value::Table(m) => m.pairs::<String, String>().collect::<mlua::Result<_>>()?,
        Value::Nil => Default::default(),
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "upload_metadata.metadata must be a table, not {}",
                other.type_name()
            )))
        }
    };
    Ok(UploadMetadata {
        acl: s("acl")?,
        cache_control: s("cache_control")?,
        content_disposition: s("content_disposition")?,
        content_encoding: s("content_encoding")?,
        content_language: s("content_language")?,
        content_type: s("content_type")?,
        expires_string: s("expires_string")?,
        metadata,
        request_payer: s("request_payer")?,
        storage_class: s("storage_class")?,
        website_redirect_location: s("website_redirect_location")?,
        tagging: s("tagging")?,
    })
}

#[async_trait]
impl PreprocessCallback for LuaPreprocess {
    async fn preprocess(&self, source: &SourceObjectInfo, upload: &mut UploadMetadata) -> Result<bool, CallbackError> {
        let vm = &self.0;
        let _turn = vm.turn.lock().await;
        let call = || {
            let lua = &vm.lua;
            let f: mlua::Function = lua.globals().get("preprocess_callback")?;
            let (ok, table) =
                f.call::<(bool, Option<Table>)>((source_table(lua, source)?, upload_table(lua, upload)?))?;
            let updated = match table {
                Some(t) => Some(read_upload_table(&t)?),
                None => None,
            };
            Ok((ok, updated))
        };
        let (ok, updated) = vm.with_deadline(call).map_err(|e| vm.error("preprocess", &e))?;
        match updated {
            Some(u) => *upload = u,
            None if ok => {
                return Err(CallbackError(format!(
                    "Lua preprocess callback error ({}): preprocess_callback must return true|false, upload_metadata",
                    vm.script.display()
                )))
            }
            None => {}
        }
        Ok(ok)
    }
}

/// `on_event(event_data)`; errors are warnings.
pub struct LuaEvent(Vm);

impl LuaEvent {
    /// Loads and compiles the script. A missing `on_event` is reported at each event, as a warning.
    pub fn load(path: &Path, settings: &LuaSettings) -> Result<Self, CallbackError> {
        Ok(LuaEvent(Vm::load(path, settings)?))
    }
}

fn event_table(lua: &Lua, e: &EventData) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("event_type", e.event_type.0 as i64)?;
    t.set("dry_run", e.dry_run)?;
    opt(lua, &t, "key", e.key.as_deref())?;
    opt(lua, &t, "source_version_id", e.source_version_id.as_deref())?;
    opt(lua, &t, "target_version_id", e.target_version_id.as_deref())?;
    opt(lua, &t, "source_size", e.source_size)?;
    opt(lua, &t, "source_etag", e.source_etag.as_deref())?;
    opt(lua, &t, "target_etag", e.target_etag.as_deref())?;
    opt(lua, &t, "source_checksum", e.source_checksum.as_deref())?;
    opt(lua, &t, "target_checksum", e.target_checksum.as_deref())?;
    opt(lua, &t, "byte_written", e.byte_written)?;
    opt(lua, &t, "message", e.message.as_deref())?;
    if let Some(s) = &e.stats {
        let secs = s.elapsed.as_secs_f64().max(0.001);
        t.set("stats_transferred_byte", s.bytes)?;
        t.set("stats_transferred_byte_per_sec", (s.bytes as f64 / secs) as u64)?;
        t.set("stats_transferred_object", s.transferred)?;
        t.set("stats_transferred_object_per_sec", (s.transferred as f64 / secs) as u64)?;
        t.set("stats_etag_verified", s.etag_verified)?;
        t.set("stats_deleted", s.deleted)?;
        t.set("stats_skipped", s.skipped)?;
        t.set("stats_error", s.failed)?;
        t.set("stats_warning", s.warnings)?;
        t.set("stats_duration_sec", s.elapsed.as_secs_f64())?;
    }
    Ok(t)
}

#[async_trait]
impl EventCallback for LuaEvent {
    async fn on_event(&self, e: &EventData) -> Result<(), CallbackError> {
        let vm = &self.0;
        let _turn = vm.turn.lock().await;
        let Some(f) = vm.function("on_event") else {
            return Err(CallbackError(format!(
                "Lua function 'on_event' not found in {}",
                vm.script.display()
            )));
        };
        vm.with_deadline(|| f.call::<()>(event_table(&vm.lua, e)?))
            .map_err(|err| vm.error("event", &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn script(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    fn object(key: &str) -> SourceObject {
        SourceObject {
            key: key.into(),
            size: 3,
            last_modified: std::time::SystemTime::UNIX_EPOCH,
            version_id: None,
            e_tag: Some("abc".into()),
            checksum_algorithm: None,
            checksum_type: None,
            is_latest: true,
            is_delete_marker: false,
        }
    }

    #[tokio::test]
    async fn filter_sees_the_fields() {
        let f = script(
            r#"function filter(o)
                 return o.key:sub(-4) == ".txt" and o.size == 3 and o.e_tag == "abc"
                   and o.last_modified == "1970-01-01T00:00:00Z" and o.is_latest
               end"#,
        );
        let cb = LuaFilter::load(f.path(), &LuaSettings::default()).unwrap();
        assert!(cb.filter(&object("a.txt")).await.unwrap());
        assert!(!cb.filter(&object("a.bin")).await.unwrap());
    }

    #[tokio::test]
    async fn sandbox_refuses_os_io_and_bytecode() {
        let settings = LuaSettings::default();
        for body in [
            "function filter(o) return os.execute('true') end",
            "function filter(o) return io.open('/etc/hostname') ~= nil end",
            "function filter(o) return load(string.dump(function() return true end))() end",
            "function filter(o) return require('socket.core') ~= nil end",
        ] {
            let f = script(body);
            let cb = LuaFilter::load(f.path(), &settings).unwrap();
            let e = cb.filter(&object("k")).await.unwrap_err();
            assert!(e.0.contains("Lua filter callback error"), "{body}: {e}");
        }
        let f = script("function filter(o) return os.time() > 0 end");
        let os = LuaSettings {
            allow_os_library: true,
            ..Default::default()
        };
        assert!(LuaFilter::load(f.path(), &os)
            .unwrap()
            .filter(&object("k"))
            .await
            .unwrap());
        let f = script("function filter(o) return load(string.dump(function() return true end))() end");
        let unsafe_vm = LuaSettings {
            allow_unsafe_vm: true,
            ..Default::default()
        };
        assert!(LuaFilter::load(f.path(), &unsafe_vm)
            .unwrap()
            .filter(&object("k"))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn endless_loops_time_out() {
        let f = script("function filter(o) while true do end end");
        let settings = LuaSettings {
            timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let cb = LuaFilter::load(f.path(), &settings).unwrap();
        let e = cb.filter(&object("k")).await.unwrap_err();
        assert!(e.0.contains("Lua callback timed out after 100ms"), "{e}");
    }

    #[tokio::test]
    async fn pcall_cannot_swallow_the_timeout() {
        let settings = LuaSettings {
            timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        for body in [
            "function filter(o) while true do pcall(function() while true do end end) end end",
            "function filter(o) while true do xpcall(function() while true do end end, function(e) return e end) end end",
            "function filter(o) while true do coroutine.resume(coroutine.create(function() while true do end end)) end end",
        ] {
            let f = script(body);
            let cb = LuaFilter::load(f.path(), &settings).unwrap();
            let e = cb.filter(&object("k")).await.unwrap_err();
            assert!(e.0.contains("Lua callback timed out after 100ms"), "{body}: {e}");
        }
        // Outside a timeout, pcall still catches ordinary errors.
        let f = script("function filter(o) local ok = pcall(error, 'x') return not ok end");
        let cb = LuaFilter::load(f.path(), &settings).unwrap();
        assert!(cb.filter(&object("k")).await.unwrap());
    }

    #[tokio::test]
    async fn an_interrupt_stops_a_script_that_has_no_timeout() {
        let settings = LuaSettings {
            timeout: None,
            ..Default::default()
        };
        for body in [
            "function filter(o) while true do end end",
            "function filter(o) while true do pcall(function() while true do end end) end end",
        ] {
            let settings = LuaSettings {
                interrupt: tokio_util::sync::CancellationToken::new(),
                ..settings.clone()
            };
            let stop = settings.interrupt.clone();
            let cb = LuaFilter::load(Path::new(script(body).path()), &settings).unwrap();
            let canceller = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                stop.cancel();
            });
            let e = cb.filter(&object("k")).await.unwrap_err();
            assert!(e.0.contains("Lua callback interrupted"), "{body}: {e}");
            canceller.join().unwrap();
            // Later calls stop at once.
            assert!(cb.filter(&object("k")).await.is_err());
        }
    }

    #[tokio::test]
    async fn safe_load_keeps_the_environment_and_refuses_bytecode_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let f = script("function filter(o) return load('return math.pi')() > 3 end");
        let cb = LuaFilter::load(f.path(), &LuaSettings::default()).unwrap();
        assert!(
            cb.filter(&object("k")).await.unwrap(),
            "load without env sees the globals"
        );
        // A module of bytecode found by require.
        let dump = script(&format!(
            "function filter(o) package.path = '{}/?.luac' return require('m') end",
            dir.path().display()
        ));
        assert!(unsafe_dump(dir.path().join("m.luac")), "bytecode written");
        let cb = LuaFilter::load(dump.path(), &LuaSettings::default()).unwrap();
        let e = cb.filter(&object("k")).await.unwrap_err();
        assert!(e.0.contains("binary"), "{e}");
        // A script file that is itself bytecode.
        let compiled = dir.path().join("script.luac");
        std::fs::copy(dir.path().join("m.luac"), &compiled).unwrap();
        let e = LuaFilter::load(&compiled, &LuaSettings::default()).err().unwrap();
        assert!(e.0.contains("binary"), "{e}");
    }

    /// Writes a bytecode chunk (`return true`, defining `filter`): dumping is safe, loading is not.
    fn unsafe_dump(path: std::path::PathBuf) -> bool {
        let lua = Lua::new();
        let f: mlua::Function = lua
            .load("filter = function() return true end return true")
            .into_function()
            .unwrap();
        std::fs::write(path, f.dump(false)).is_ok()
    }

    #[tokio::test]
    async fn memory_limit_is_an_error() {
        let f = script("function filter(o) local t = {} for i = 1, 1e8 do t[i] = i end return true end");
        let settings = LuaSettings {
            memory_limit: 4 * 1024 * 1024,
            ..Default::default()
        };
        let cb = LuaFilter::load(f.path(), &settings).unwrap();
        let e = cb.filter(&object("k")).await.unwrap_err();
        assert!(e.0.contains("memory limit of 4194304 bytes exceeded"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_script_and_line() {
        let f = script("function filter(o)\n  return o.key ==\nend");
        let e = LuaFilter::load(f.path(), &LuaSettings::default()).err().unwrap();
        let path = f.path().display().to_string();
        assert!(e.0.contains(&format!("{path}:3")), "{e}");
    }

    #[tokio::test]
    async fn preprocess_edits_the_upload() {
        let f = script(
            r#"function preprocess_callback(src, up)
                 up.metadata["origin"] = src.key
                 up.tagging = "a=1&b=2"
                 up.content_type = "application/x-test"
                 return src.content_length > 0, up
               end"#,
        );
        let cb = LuaPreprocess::load(f.path(), &LuaSettings::default()).unwrap();
        let src = SourceObjectInfo {
            key: "k".into(),
            content_length: 1,
            ..Default::default()
        };
        let mut up = UploadMetadata::default();
        assert!(cb.preprocess(&src, &mut up).await.unwrap());
        assert_eq!(up.metadata.get("origin").map(String::as_str), Some("k"));
        assert_eq!(up.tagging.as_deref(), Some("a=1&b=2"));
        assert_eq!(up.content_type.as_deref(), Some("application/x-test"));
    }
}
