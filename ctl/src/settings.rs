//! Where `rpoolctl`'s settings come from, and `ctl.toml`.
//!
//! Controller addresses: `--controller` > `RPOOL_CONTROLLER` > `ctl.toml`
//! `controllers` > `127.0.0.1:7443`. Config path: `--config` >
//! `RPOOL_CTL_CONFIG` > `$XDG_CONFIG_HOME/rpool/ctl.toml` >
//! `$HOME/.config/rpool/ctl.toml`. A missing default config is fine; a missing
//! explicit one is an error (exit 64).
//!
//! TLS files (each separately): `--tls-ca`/`--tls-cert`/`--tls-key` >
//! `RPOOL_TLS_CA`/`RPOOL_TLS_CERT`/`RPOOL_TLS_KEY` > `ctl.toml` `[tls]`
//! (relative paths are relative to the file's directory) >
//! `pki/ca.crt`, `pki/admin.crt`, `pki/admin.key` next to `ctl.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::GlobalArgs;
use crate::exit::Failure;

/// Controller address used when nothing else is configured.
pub const DEFAULT_CONTROLLER: &str = "127.0.0.1:7443";
/// Per-request timeout when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most controller addresses accepted (a Raft group has at most 7 members).
pub const MAX_CONTROLLERS: usize = 7;

/// The environment variables rpoolctl reads, captured once so the resolution
/// logic is pure and testable. Empty values count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub controller: Option<String>,
    pub ctl_config: Option<String>,
    pub xdg_config_home: Option<String>,
    pub xdg_state_home: Option<String>,
    pub home: Option<String>,
    pub sandbox_dir: Option<String>,
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            controller: var("RPOOL_CONTROLLER"),
            ctl_config: var("RPOOL_CTL_CONFIG"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            home: var("HOME"),
            sandbox_dir: var("RPOOL_SANDBOX_DIR"),
            tls_ca: var("RPOOL_TLS_CA"),
            tls_cert: var("RPOOL_TLS_CERT"),
            tls_key: var("RPOOL_TLS_KEY"),
        }
    }
}

/// `ctl.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfig {
    /// Controller addresses ("host:port"), tried in order.
    pub controllers: Option<Vec<String>>,
    /// The admin's mutual-TLS files.
    pub tls: Option<CtlTls>,
}

/// `[tls]` of `ctl.toml`: every key optional (default: `pki/ca.crt`,
/// `pki/admin.crt`, `pki/admin.key` next to `ctl.toml`); relative paths are
/// relative to the directory of `ctl.toml`.
pub type CtlTls = rpool_proto::config::TlsPaths;

impl CtlConfig {
    /// Parses and validates the text of `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Self, Failure> {
        let config: CtlConfig = toml::from_str(text)
            .map_err(|e| Failure::usage(format!("{}: {}", file.display(), e.to_string().trim_end())))?;
        config.validate(file)?;
        Ok(config)
    }

    pub fn validate(&self, file: &Path) -> Result<(), Failure> {
        let Some(list) = &self.controllers else {
            return Ok(());
        };
        if list.is_empty() || list.len() > MAX_CONTROLLERS {
            return Err(Failure::usage(format!(
                "{}: controllers: {} entries is out of range (accepted 1..={MAX_CONTROLLERS})",
                file.display(),
                list.len()
            )));
        }
        for (i, addr) in list.iter().enumerate() {
            check_address(addr).map_err(|problem| {
                Failure::usage(format!(
                    "{}: controllers[{i}]: {problem} (accepted \"host:port\", e.g. \"10.0.0.1:7443\")",
                    file.display()
                ))
            })?;
        }
        Ok(())
    }
}

/// Where the controller addresses came from (shown in errors and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    ConfigFile,
    Default,
}

/// Everything a command needs besides its own flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub controllers: Vec<String>,
    pub controllers_source: Source,
    /// `--timeout` when given.
    pub timeout_flag: Option<Duration>,
    /// Path of `ctl.toml` (may not exist); `None` when neither `--config`,
    /// `RPOOL_CTL_CONFIG`, `XDG_CONFIG_HOME` nor `HOME` says where it is.
    pub config_path: Option<PathBuf>,
    /// The admin's TLS files; `None` when nothing says where they are (no
    /// flags, env or config path).
    pub tls: Option<rpool_proto::tls::TlsFiles>,
}

impl Settings {
    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout_flag.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Loads `ctl.toml` and resolves every setting.
    pub fn resolve(global: &GlobalArgs, env: &Env) -> Result<Self, Failure> {
        let located = config_path(global.config.as_deref(), env);
        let file = match &located {
            Some((path, explicit)) => load_config(path, *explicit)?,
            None => None,
        };
        let config_path = located.map(|(path, _)| path);
        let (controllers, controllers_source) = resolve_controllers(
            global.controller.as_deref(),
            env.controller.as_deref(),
            file.as_ref(),
        )?;
        let tls = resolve_tls(global, env, file.as_ref(), config_path.as_deref());
        Ok(Self {
            controllers,
            controllers_source,
            timeout_flag: global.timeout,
            config_path,
            tls,
        })
    }
}

/// `rpoolctl --check-config`: `ctl.toml` was already parsed and checked by
/// [`Settings::resolve`]; the admin TLS files load (key matches
/// certificate, chain to the CA, validity) and the key is not readable by
/// every user. Errors exit 64 naming the file.
pub fn check_config(settings: &Settings) -> anyhow::Result<()> {
    crate::client::tls_material()?;
    if let Some(files) = &settings.tls {
        rpool_proto::tls::check_key_mode(&files.key).map_err(|e| Failure::usage(e.to_string()))?;
    }
    match &settings.config_path {
        Some(path) if path.exists() => println!("config ok: {}", path.display()),
        _ => println!("config ok (no ctl.toml; flags, environment and defaults)"),
    }
    Ok(())
}

/// The ctl config path and whether the user named it explicitly; `None`
/// when there is nowhere to look (no HOME, e.g. some cron jobs): defaults apply.
pub fn config_path(flag: Option<&Path>, env: &Env) -> Option<(PathBuf, bool)> {
    if let Some(path) = flag {
        return Some((path.to_path_buf(), true));
    }
    if let Some(path) = &env.ctl_config {
        return Some((PathBuf::from(path), true));
    }
    if let Some(dir) = &env.xdg_config_home {
        return Some((Path::new(dir).join("rpool/ctl.toml"), false));
    }
    env.home
        .as_ref()
        .map(|home| (Path::new(home).join(".config/rpool/ctl.toml"), false))
}

/// Reads `ctl.toml`; `None` when a default (non-explicit) path does not exist.
pub fn load_config(path: &Path, explicit: bool) -> Result<Option<CtlConfig>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => CtlConfig::parse(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(e) => Err(Failure::usage(format!("{}: {e}", path.display()))),
    }
}

/// Each TLS file: flag > env > `ctl.toml` `[tls]` (relative to its
/// directory) > `pki/<name>` next to `ctl.toml`. `None` if a file has no
/// source at all (no config path to default next to).
pub fn resolve_tls(
    global: &GlobalArgs,
    env: &Env,
    file: Option<&CtlConfig>,
    config_path: Option<&Path>,
) -> Option<rpool_proto::tls::TlsFiles> {
    let section = file.and_then(|f| f.tls.clone()).unwrap_or_default();
    let from_file = config_path.map(|p| {
        let dir = p.parent().unwrap_or(Path::new("."));
        section.resolve(
            dir,
            &rpool_proto::tls::TlsFiles::in_dir(&dir.join("pki"), "admin"),
        )
    });
    let pick = |flag: &Option<PathBuf>, env: &Option<String>, from_file: Option<&PathBuf>| {
        flag.clone()
            .or_else(|| env.as_ref().map(PathBuf::from))
            .or_else(|| from_file.cloned())
    };
    let f = from_file.as_ref();
    Some(rpool_proto::tls::TlsFiles {
        ca: pick(&global.tls_ca, &env.tls_ca, f.map(|f| &f.ca))?,
        cert: pick(&global.tls_cert, &env.tls_cert, f.map(|f| &f.cert))?,
        key: pick(&global.tls_key, &env.tls_key, f.map(|f| &f.key))?,
    })
}

/// flag > env > config file > default.
pub fn resolve_controllers(
    flag: Option<&str>,
    env: Option<&str>,
    file: Option<&CtlConfig>,
) -> Result<(Vec<String>, Source), Failure> {
    if let Some(text) = flag {
        return parse_address_list(text)
            .map(|list| (list, Source::Flag))
            .map_err(|p| Failure::usage(format!("--controller: {p} (accepted host:port[,host:port...])")));
    }
    if let Some(text) = env {
        return parse_address_list(text)
            .map(|list| (list, Source::Env))
            .map_err(|p| {
                Failure::usage(format!(
                    "RPOOL_CONTROLLER: {p} (accepted host:port[,host:port...])"
                ))
            });
    }
    if let Some(list) = file.and_then(|c| c.controllers.clone()) {
        return Ok((list, Source::ConfigFile));
    }
    Ok((vec![DEFAULT_CONTROLLER.to_string()], Source::Default))
}

/// Splits `a:1,b:2` and checks each entry.
pub fn parse_address_list(text: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err("no address given".to_string());
    }
    if list.len() > MAX_CONTROLLERS {
        return Err(format!(
            "{} addresses is out of range (accepted 1..={MAX_CONTROLLERS})",
            list.len()
        ));
    }
    for addr in &list {
        check_address(addr)?;
    }
    Ok(list)
}

/// Checks one "host:port" (an `http://` or `https://` prefix is tolerated).
pub fn check_address(addr: &str) -> Result<(), String> {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let bad = || format!("{addr:?} is not a host:port address");
    let (host, port) = bare.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(list: &[&str]) -> CtlConfig {
        CtlConfig {
            controllers: Some(list.iter().map(|s| s.to_string()).collect()),
            tls: None,
        }
    }

    #[test]
    fn the_flag_wins_over_env_and_config() {
        let (list, source) = resolve_controllers(
            Some("10.0.0.1:7443,10.0.0.2:7443"),
            Some("env:1"),
            Some(&file(&["cfg:1"])),
        )
        .unwrap();
        assert_eq!(list, ["10.0.0.1:7443", "10.0.0.2:7443"]);
        assert_eq!(source, Source::Flag);
    }

    #[test]
    fn the_env_wins_over_the_config_file() {
        let (list, source) = resolve_controllers(None, Some("env:1"), Some(&file(&["cfg:1"]))).unwrap();
        assert_eq!((list, source), (vec!["env:1".to_string()], Source::Env));
    }

    #[test]
    fn the_config_file_wins_over_the_default() {
        let (list, source) = resolve_controllers(None, None, Some(&file(&["cfg:1"]))).unwrap();
        assert_eq!((list, source), (vec!["cfg:1".to_string()], Source::ConfigFile));
    }

    #[test]
    fn the_default_is_localhost_7443() {
        let (list, source) = resolve_controllers(None, None, Some(&CtlConfig::default())).unwrap();
        assert_eq!(
            (list, source),
            (vec!["127.0.0.1:7443".to_string()], Source::Default)
        );
        assert_eq!(resolve_controllers(None, None, None).unwrap().1, Source::Default);
    }

    #[test]
    fn a_bad_flag_address_is_a_usage_error_naming_the_flag() {
        let err = resolve_controllers(Some("nonsense"), None, None).unwrap_err();
        assert_eq!(err.code, crate::exit::USAGE);
        assert!(
            err.message.starts_with("--controller: \"nonsense\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn config_path_precedence_is_flag_env_xdg_home() {
        let mut env = Env {
            ctl_config: Some("/env/ctl.toml".into()),
            xdg_config_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(
            config_path(Some(Path::new("/flag.toml")), &env).unwrap(),
            (PathBuf::from("/flag.toml"), true)
        );
        assert_eq!(
            config_path(None, &env).unwrap(),
            (PathBuf::from("/env/ctl.toml"), true)
        );
        env.ctl_config = None;
        assert_eq!(
            config_path(None, &env).unwrap(),
            (PathBuf::from("/xdg/rpool/ctl.toml"), false)
        );
        env.xdg_config_home = None;
        assert_eq!(
            config_path(None, &env).unwrap(),
            (PathBuf::from("/home/u/.config/rpool/ctl.toml"), false)
        );
    }

    #[test]
    fn without_home_there_is_no_config_and_defaults_apply() {
        assert_eq!(config_path(None, &Env::default()), None);
        let settings = Settings::resolve(&GlobalArgs::default(), &Env::default()).unwrap();
        assert_eq!(settings.config_path, None);
        assert_eq!(settings.controllers, [DEFAULT_CONTROLLER]);
    }

    #[test]
    fn a_missing_default_config_is_fine_but_a_missing_explicit_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.toml");
        assert_eq!(load_config(&path, false).unwrap(), None);
        assert_eq!(load_config(&path, true).unwrap_err().code, crate::exit::USAGE);
    }

    #[test]
    fn unknown_config_fields_are_rejected_naming_the_file() {
        let err = CtlConfig::parse(Path::new("/c/ctl.toml"), "controller = [\"a:1\"]\n").unwrap_err();
        assert_eq!(err.code, crate::exit::USAGE);
        assert!(err.message.starts_with("/c/ctl.toml: "), "{}", err.message);
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn config_addresses_are_validated_with_their_index() {
        let err = CtlConfig::parse(Path::new("ctl.toml"), "controllers = [\"a:1\", \"b\"]").unwrap_err();
        assert_eq!(
            err.message,
            "ctl.toml: controllers[1]: \"b\" is not a host:port address (accepted \"host:port\", e.g. \"10.0.0.1:7443\")"
        );
        let err = CtlConfig::parse(Path::new("ctl.toml"), "controllers = []").unwrap_err();
        assert_eq!(
            err.message,
            "ctl.toml: controllers: 0 entries is out of range (accepted 1..=7)"
        );
    }

    #[test]
    fn tls_files_come_from_flag_env_file_or_next_to_ctl_toml() {
        let cfg = Path::new("/home/u/.config/rpool/ctl.toml");
        let files = resolve_tls(&GlobalArgs::default(), &Env::default(), None, Some(cfg)).unwrap();
        assert_eq!(files.ca, PathBuf::from("/home/u/.config/rpool/pki/ca.crt"));
        assert_eq!(files.cert, PathBuf::from("/home/u/.config/rpool/pki/admin.crt"));
        assert_eq!(files.key, PathBuf::from("/home/u/.config/rpool/pki/admin.key"));
        let file = CtlConfig::parse(cfg, "[tls]\nca = \"certs/ca.pem\"\ncert = \"/abs/me.crt\"\n").unwrap();
        let env = Env {
            tls_key: Some("/env/me.key".into()),
            ..Env::default()
        };
        let global = GlobalArgs {
            tls_cert: Some("/flag/me.crt".into()),
            ..GlobalArgs::default()
        };
        let files = resolve_tls(&global, &env, Some(&file), Some(cfg)).unwrap();
        assert_eq!(files.ca, PathBuf::from("/home/u/.config/rpool/certs/ca.pem"));
        assert_eq!(files.cert, PathBuf::from("/flag/me.crt"));
        assert_eq!(files.key, PathBuf::from("/env/me.key"));
        assert_eq!(
            resolve_tls(&GlobalArgs::default(), &Env::default(), None, None),
            None
        );
        let err = CtlConfig::parse(cfg, "[tls]\ncrt = \"x\"\n").unwrap_err();
        assert!(err.message.contains("crt"), "{}", err.message);
    }

    #[test]
    fn the_packaged_ctl_toml_parses_with_tls_next_to_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/rpool/ctl.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = CtlConfig::parse(&path, &text).unwrap();
        assert_eq!(config.controllers.as_ref().map(Vec::len), Some(3));
        let cfg = Path::new("/home/u/.config/rpool/ctl.toml");
        let files = resolve_tls(&GlobalArgs::default(), &Env::default(), Some(&config), Some(cfg)).unwrap();
        assert_eq!(
            files,
            rpool_proto::tls::TlsFiles::in_dir(Path::new("/home/u/.config/rpool/pki"), "admin")
        );
    }

    #[test]
    fn addresses_accept_ipv6_and_names() {
        for ok in ["[::1]:7443", "ctl-1.example.com:7443", "http://10.0.0.1:7443"] {
            assert_eq!(check_address(ok), Ok(()), "{ok}");
        }
        for bad in ["10.0.0.1", ":7443", "a:0", "a:99999", "a b:1"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
