//! Connection flags shared by the binaries; every flag also reads from the environment.

use clap::Args;
use std::path::PathBuf;
use warmlane_shared::{Settings, SettingsError};

/// Where the broker, Redis and the settings are. `{:?}` redacts the URLs' passwords.
#[derive(Clone, Args)]
pub struct ConnectArgs {
    /// AMQP URL of RabbitMQ (credentials are never logged); the nodes of a cluster as a
    /// comma-separated list, tried in turn (`amqp://u:p@a:5672/%2f,amqp://u:p@b:5672/%2f`).
    #[arg(long, global = true, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Redis URL.
    #[arg(long, global = true, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// CA certificates (PEM) trusted for an `amqps://` URL instead of the bundled
    /// webpki roots.
    #[arg(long, global = true, env = "AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for a `rediss://` URL instead of the bundled
    /// webpki roots.
    #[arg(long, global = true, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Name prefix of exchanges, queues and Redis keys.
    #[arg(long, global = true, env = "WARMLANE_PREFIX", default_value = "warmlane")]
    pub prefix: String,
    /// Path of inference_settings.json.
    #[arg(long, global = true, env = "WARMLANE_SETTINGS", default_value = "inference_settings.json")]
    pub settings: PathBuf,
}

impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("amqp_ca_file", &self.amqp_ca_file)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .finish()
    }
}

impl ConnectArgs {
    /// Loads and checks the settings file.
    pub fn load_settings(&self) -> Result<Settings, SettingsError> {
        Settings::load(&self.settings)
    }
}

/// Logging and metrics flags shared by the binaries.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log as JSON lines instead of human-readable text (the variable takes
    /// 1/0, true/false, yes/no, on/off).
    #[arg(long, global = true, env = "WARMLANE_JSON_LOGS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub json_logs: bool,
    /// StatsD address (`host:port`); metrics are off when unset.
    #[arg(long, global = true, env = "WARMLANE_STATSD")]
    pub statsd: Option<String>,
    /// Prefix of every metric name.
    #[arg(long, global = true, env = "WARMLANE_METRICS_PREFIX", default_value = "warmlane")]
    pub metrics_prefix: String,
}

/// A URL with its password replaced, for logs and errors. Without a scheme
/// (`user:password@host`, a typo), everything before the last `@` is masked but the
/// user name.
/// A list of URLs (`amqp://a,amqp://b`) is redacted URL by URL.
pub fn redact_url(url: &str) -> String {
    let urls = url_list(url);
    if urls.len() > 1 {
        return urls.iter().map(|u| redact_one(u)).collect::<Vec<_>>().join(",");
    }
    redact_one(url)
}

/// Pure: the URLs of a comma-separated list (`amqp://a:5672,amqp://b:5672`), each
/// trimmed. A text whose pieces do not all name a scheme (a `,` inside a password
/// that is not percent-encoded) is one URL.
pub fn url_list(text: &str) -> Vec<&str> {
    let pieces: Vec<&str> = text.split(',').map(str::trim).collect();
    if pieces.len() > 1 && pieces.iter().all(|p| p.contains("://")) {
        pieces
    } else {
        vec![text]
    }
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_urls_splits_only_where_every_piece_is_a_url() {
        // (text, URLs)
        let cases: [(&str, &[&str]); 4] = [
            ("amqp://a/", &["amqp://a/"]),
            ("amqp://a/,amqp://b/", &["amqp://a/", "amqp://b/"]),
            (" amqp://a/ , amqps://b/ ,amqp://c/", &["amqp://a/", "amqps://b/", "amqp://c/"]),
            ("amqp://u:p,w@a/", &["amqp://u:p,w@a/"]),
        ];
        for (text, want) in cases {
            assert_eq!(url_list(text), want, "{text}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:secret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(redact_url("redis://:pw@127.0.0.1:6379/"), "redis://:***@127.0.0.1:6379/");
        assert_eq!(redact_url("redis://127.0.0.1/"), "redis://127.0.0.1/");
        assert!(!redact_url("amqp://u:p@w@h/").contains("p@w"));
        assert_eq!(redact_url("guest:secret@host:5672"), "guest:***@host:5672", "no scheme");
        assert_eq!(
            redact_url("amqp://g:s1@a:5672/%2f, amqp://g:s2@b:5673/%2f"),
            "amqp://g:***@a:5672/%2f,amqp://g:***@b:5673/%2f"
        );
        assert!(!redact_url("amqp://g:se,cret@a/").contains("cret"), "a comma in a password");
        let args = ConnectArgs {
            amqp_url: "amqp://guest:secret@host/".into(),
            redis_url: "redis://:secret@host/".into(),
            amqp_ca_file: None,
            redis_ca_file: None,
            prefix: "p".into(),
            settings: "s.json".into(),
        };
        assert!(!format!("{args:?}").contains("secret"), "{args:?}");
    }
}
