//! Configuration files, before everything else: `edgefilter run --config FILE` reads a TOML file
//! whose keys are the `run` flags without their dashes (`input-topic = ["telemetry/#"]`,
//! `qos = 1`), and `edgefilter config check|print` inspect it. A value applies only where the
//! command line and the environment gave none (flag > environment > file > default); clap's
//! `ArgMatches::value_source` says where each value came from. File values are handed to clap
//! as if typed (`--key=value`), so they are parsed and validated exactly like flags. An unknown
//! key, a value of the wrong shape or a bad value is one [`FileError`] line naming the file and
//! the key. The one key that is not a flag is `password` (secrets stay off command lines);
//! `config print` never shows it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Subcommand};
use thiserror::Error;

use super::{Cli, Command, RunArgs};

/// `edgefilter config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: every key known, every value valid, the settings complete
    /// (as `edgefilter run --config FILE` would see them, environment included).
    Check {
        /// The TOML file, e.g. /etc/edgefilter/edgefilter.toml.
        file: PathBuf,
    },
    /// Print the effective settings of `edgefilter run` (flags > environment > --config file >
    /// defaults) as a TOML configuration file, each with where it came from; the password is
    /// not shown.
    Print(Box<RunArgs>),
}

/// The file key that is not a flag.
pub const PASSWORD_KEY: &str = "password";

/// A configuration file that cannot be used, in one line.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("--config {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not TOML: {why}")]
    Syntax { path: String, why: String },
    #[error("{path}: unknown key `{key}` (the keys are the `edgefilter run` flags without their dashes, e.g. `input-topic`)")]
    UnknownKey { path: String, key: String },
    #[error("{path}: key `{key}`: {why}")]
    Value {
        path: String,
        key: String,
        why: String,
    },
    #[error("{path}: set `password` or `password-file`, not both")]
    TwoPasswords { path: String },
}

/// Everything the command line, the environment and the configuration file say.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    /// `password` from the file (used when no `--password-file` applies).
    pub password: Option<String>,
    /// Where each `run` setting came from, by flag name (for `config print`).
    pub sources: BTreeMap<String, ValueOrigin>,
    matches: ArgMatches,
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    Flag,
    Env(String),
    File(PathBuf),
    Default,
    Unset,
}

/// Why the command line cannot be used: clap's own error (usage, help, version) or a file's.
#[derive(Debug)]
pub enum ParseError {
    Clap(clap::Error),
    File(FileError),
}

impl From<clap::Error> for ParseError {
    fn from(e: clap::Error) -> Self {
        ParseError::Clap(e)
    }
}

impl From<FileError> for ParseError {
    fn from(e: FileError) -> Self {
        ParseError::File(e)
    }
}

/// The `run` flags a file may set: long name → (arg id, takes several values, env variable).
fn run_flags() -> BTreeMap<String, (String, bool, Option<String>)> {
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("`run` exists");
    run.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if matches!(long, "help" | "version" | "config") {
                return None;
            }
            let multi = matches!(a.get_action(), clap::ArgAction::Append);
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((long.to_string(), (a.get_id().to_string(), multi, env)))
        })
        .collect()
}

/// A file's flag settings (key, the values as typed after `--key=`) and its `password`.
pub type FileValues = (Vec<(String, Vec<String>)>, Option<String>);

/// Reads a configuration file.
pub fn read_file(path: &Path) -> Result<FileValues, FileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: p.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| FileError::Syntax {
            path: p.clone(),
            why: e.message().replace('\n', " "),
        })?;
    let flags = run_flags();
    let mut out = Vec::new();
    let mut password = None;
    for (key, value) in table {
        let bad = |why: &str| FileError::Value {
            path: p.clone(),
            key: key.clone(),
            why: why.to_string(),
        };
        if key == PASSWORD_KEY {
            match value {
                toml::Value::String(s) if !s.is_empty() => password = Some(s),
                _ => return Err(bad("expected a non-empty string")),
            }
            continue;
        }
        let Some((_, multi, _)) = flags.get(&key) else {
            return Err(FileError::UnknownKey { path: p, key });
        };
        let scalar = |v: &toml::Value| -> Result<String, FileError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err(bad("expected a string, a number or a boolean")),
            }
        };
        let values = match &value {
            toml::Value::Array(items) if *multi => {
                items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
            }
            toml::Value::Array(_) => return Err(bad("takes one value, not a list")),
            v => vec![scalar(v)?],
        };
        out.push((key, values));
    }
    if password.is_some() && out.iter().any(|(k, _)| k == "password-file") {
        return Err(FileError::TwoPasswords { path: p });
    }
    Ok((out, password))
}

/// Checks one file value the way clap checks the flag, and names the file and key if it fails.
fn check_value(path: &Path, key: &str, values: &[String]) -> Result<(), FileError> {
    let mut argv: Vec<String> = vec!["edgefilter".into(), "run".into()];
    argv.extend(values.iter().map(|v| format!("--{key}={v}")));
    match Cli::command().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        // Another setting (from the environment) is what failed: not this key's fault.
        Err(e) if !first_line(&e).contains(&format!("--{key}")) => Ok(()),
        Err(e) => Err(FileError::Value {
            path: path.display().to_string(),
            key: key.to_string(),
            why: first_line(&e),
        }),
    }
}

/// clap's first error line, without its `error: ` prefix.
pub fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string()
}

/// The sub-matches holding the `run` flags: `run`, or `config print`.
fn run_matches(m: &ArgMatches) -> Option<&ArgMatches> {
    match m.subcommand() {
        Some(("run", sub)) => Some(sub),
        Some(("config", sub)) => match sub.subcommand() {
            Some(("print", p)) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// Parses `argv` with the configuration file applied (see the module header).
pub fn parse(argv: Vec<OsString>) -> Result<Parsed, ParseError> {
    let first = Cli::command().try_get_matches_from(&argv)?;
    let flags = run_flags();
    let Some(run) = run_matches(&first) else {
        let cli = Cli::from_arg_matches(&first)?;
        return Ok(Parsed {
            cli,
            password: None,
            sources: BTreeMap::new(),
            matches: first,
        });
    };
    let file = run.get_one::<PathBuf>("config").cloned();
    let (values, password) = match &file {
        Some(f) => read_file(f)?,
        None => (Vec::new(), None),
    };
    let from_user = |id: &str| {
        matches!(
            run.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let mut argv = argv;
    let mut from_file = Vec::new();
    for (key, vals) in &values {
        let (id, _, _) = &flags[key];
        if from_user(id) {
            continue;
        }
        let path = file.as_deref().unwrap_or(Path::new(""));
        check_value(path, key, vals)?;
        argv.extend(vals.iter().map(|v| OsString::from(format!("--{key}={v}"))));
        from_file.push(key.clone());
    }
    let password_applies = password.is_some() && !from_user("password_file");
    let mut sources = BTreeMap::new();
    for (long, (id, _, env)) in &flags {
        let src = match run.value_source(id) {
            Some(ValueSource::CommandLine) => ValueOrigin::Flag,
            Some(ValueSource::EnvVariable) => ValueOrigin::Env(env.clone().unwrap_or_default()),
            _ if from_file.contains(long) => ValueOrigin::File(file.clone().unwrap_or_default()),
            Some(ValueSource::DefaultValue) => ValueOrigin::Default,
            _ => ValueOrigin::Unset,
        };
        sources.insert(long.clone(), src);
    }
    if password_applies {
        sources.insert(
            PASSWORD_KEY.into(),
            ValueOrigin::File(file.clone().unwrap_or_default()),
        );
    }
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed {
        cli,
        password: password.filter(|_| password_applies),
        sources,
        matches,
    })
}

impl Parsed {
    /// The effective `run` settings as a TOML configuration file (for `config print`).
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# edgefilter run: effective settings (flag > environment > file > default)\n",
        );
        let Some(run) = run_matches(&self.matches) else {
            return out;
        };
        for (long, (id, multi, _)) in run_flags() {
            let src = self
                .sources
                .get(&long)
                .cloned()
                .unwrap_or(ValueOrigin::Unset);
            let raw: Vec<String> = run
                .get_raw(&id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let why = match &src {
                ValueOrigin::Flag => "command line".to_string(),
                ValueOrigin::Env(var) => format!("environment, {var}"),
                ValueOrigin::File(p) => format!("file, {}", p.display()),
                ValueOrigin::Default => "default".to_string(),
                ValueOrigin::Unset => "not set".to_string(),
            };
            if raw.is_empty() {
                let _ = writeln!(out, "# {long} =   # {why}");
                continue;
            }
            let value = if multi {
                let items: Vec<String> = raw.iter().map(|v| toml_value(v)).collect();
                format!("[{}]", items.join(", "))
            } else {
                toml_value(&raw[0])
            };
            let _ = writeln!(out, "{long} = {value}   # {why}");
        }
        if let Some(ValueOrigin::File(p)) = self.sources.get(PASSWORD_KEY) {
            let _ = writeln!(
                out,
                "# {PASSWORD_KEY} = \"<redacted>\"   # file, {}",
                p.display()
            );
        }
        out
    }
}

/// A raw flag value as TOML: numbers bare when TOML writes them the same way, everything
/// else a quoted string.
fn toml_value(raw: &str) -> String {
    if let Ok(i) = raw.parse::<i64>() {
        return i.to_string();
    }
    if let Ok(f) = raw.parse::<f64>() {
        let bare = toml::Value::Float(f).to_string();
        if bare == raw {
            return bare;
        }
    }
    toml::Value::String(raw.to_string()).to_string()
}

/// Why `config check` refused a file.
#[derive(Debug, Error)]
pub enum CheckError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

/// `edgefilter config check FILE`: the one-line verdict, or the first problem.
pub fn check(file: &Path) -> Result<String, CheckError> {
    let invalid = |why: String| CheckError::Invalid {
        path: file.display().to_string(),
        why,
    };
    let argv: Vec<OsString> = ["edgefilter", "run", "--config"]
        .iter()
        .map(OsString::from)
        .chain([file.as_os_str().to_owned()])
        .collect();
    let parsed = parse(argv).map_err(|e| match e {
        ParseError::File(f) => CheckError::File(f),
        ParseError::Clap(c) => invalid(first_line(&c)),
    })?;
    let keys = parsed
        .sources
        .values()
        .filter(|s| matches!(s, ValueOrigin::File(_)))
        .count();
    let Command::Run(args) = parsed.cli.command else {
        unreachable!("parsed as `run`")
    };
    args.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(format!(
        "{}: ok ({keys} settings from the file)",
        file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_values_read_back_as_typed() {
        assert_eq!(toml_value("256"), "256");
        assert_eq!(toml_value("-3"), "-3");
        assert_eq!(toml_value("30.5"), "30.5");
        assert_eq!(toml_value("1e3"), "\"1e3\"");
        assert_eq!(toml_value("5ms"), "\"5ms\"");
        for raw in ["alerts/{topic}", "a\"b", "it's", "x\\y"] {
            let t: toml::Table = format!("k = {}", toml_value(raw)).parse().unwrap();
            assert_eq!(t["k"].as_str(), Some(raw));
        }
    }

    #[test]
    fn every_run_flag_is_a_key_named_like_the_flag() {
        let flags = run_flags();
        for key in [
            "broker",
            "input-topic",
            "qos",
            "password-file",
            "max-inflight",
        ] {
            assert!(flags.contains_key(key), "{key}");
        }
        assert!(flags["input-topic"].1, "input-topic takes a list");
        assert!(!flags["qos"].1);
        assert!(!flags.contains_key("config") && !flags.contains_key("help"));
        assert_eq!(flags["qos"].2.as_deref(), Some("EDGEFILTER_QOS"));
    }

    #[test]
    fn a_password_flag_keeps_the_file_password_out() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "password = \"pw\"\nthreshold = 31\n").unwrap();
        let argv = |extra: &[&str]| -> Vec<OsString> {
            let mut v: Vec<OsString> = ["edgefilter", "run", "--config"]
                .iter()
                .map(OsString::from)
                .collect();
            v.push(f.clone().into_os_string());
            v.extend(extra.iter().map(OsString::from));
            v
        };
        let p = parse(argv(&[])).unwrap();
        assert_eq!(p.password.as_deref(), Some("pw"));
        let Command::Run(a) = &p.cli.command else {
            panic!()
        };
        assert_eq!(a.threshold, 31.0);
        let p = parse(argv(&["--password-file", "/x", "--threshold", "20"])).unwrap();
        assert_eq!(p.password, None);
        let Command::Run(a) = &p.cli.command else {
            panic!()
        };
        assert_eq!(a.threshold, 20.0);
        assert_eq!(p.sources["threshold"], ValueOrigin::Flag);
    }
}
