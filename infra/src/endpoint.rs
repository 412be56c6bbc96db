//! [`Endpoint`]: where RabbitMQ or Redis is and whom to trust there, the value
//! passed wherever a URL used to be. `{:?}` and every error show the URL with its
//! password redacted.

use crate::config::{redact_url, ConnectArgs};
use crate::error::{InfraError, Service};
use crate::tls::Ca;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A service's URL and, for a TLS URL (`amqps://`, `rediss://`), the CA it trusts:
/// a CA file's certificates, or the bundled webpki roots without one.
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    ca: Option<Arc<Ca>>,
}

impl Endpoint {
    /// An endpoint trusting the default roots when its URL uses TLS.
    pub fn new(url: impl Into<String>) -> Endpoint {
        Endpoint { url: url.into(), ca: None }
    }

    /// Trusts only the certificates of `ca_file` (`flag` names the option in errors).
    /// The file is read and checked now; a URL without TLS is refused, since the file
    /// would be ignored and the connection would go out in clear.
    pub fn with_ca_file(self, service: Service, flag: &str, ca_file: &Path) -> Result<Endpoint, InfraError> {
        let config_error = |source: Box<dyn std::error::Error + Send + Sync>| InfraError::Connect {
            service,
            url: self.redacted(),
            source,
        };
        if !self.is_tls() {
            let scheme = tls_scheme(service);
            let problem = format!("{flag} is set but the URL is not {scheme}:// (no TLS)");
            return Err(config_error(Box::new(crate::error::BadSetting(problem))));
        }
        let ca = Ca::read(ca_file).map_err(|e| config_error(Box::new(e)))?;
        Ok(Endpoint { ca: Some(Arc::new(ca)), ..self })
    }

    /// The URL, password included: for the client libraries only.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with its password redacted, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// Whether the URL asks for TLS (`amqps://` or `rediss://`).
    pub fn is_tls(&self) -> bool {
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        scheme.eq_ignore_ascii_case(tls_scheme(Service::Broker))
            || scheme.eq_ignore_ascii_case(tls_scheme(Service::Redis))
    }

    /// One endpoint per URL of a list (`amqp://a,amqp://b`: the nodes of a RabbitMQ
    /// cluster), each trusting this endpoint's CA; a single URL gives itself.
    pub fn each(&self) -> Vec<Endpoint> {
        crate::config::url_list(&self.url)
            .into_iter()
            .map(|url| Endpoint { url: url.to_string(), ca: self.ca.clone() })
            .collect()
    }

    /// The CA file's certificates, when one was given.
    pub fn ca(&self) -> Option<&Ca> {
        self.ca.as_deref()
    }
}

fn tls_scheme(service: Service) -> &'static str {
    match service {
        Service::Broker => "amqps",
        Service::Redis => "rediss",
    }
}

impl From<&str> for Endpoint {
    fn from(url: &str) -> Endpoint {
        Endpoint::new(url)
    }
}

impl From<String> for Endpoint {
    fn from(url: String) -> Endpoint {
        Endpoint::new(url)
    }
}

impl From<&String> for Endpoint {
    fn from(url: &String) -> Endpoint {
        Endpoint::new(url.as_str())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.redacted())
            .field("ca_file", &self.ca.as_ref().map(|ca| ca.path()))
            .finish()
    }
}

/// The broker's and Redis's endpoints, as every binary gets them from its flags.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// RabbitMQ.
    pub amqp: Endpoint,
    /// Redis.
    pub redis: Endpoint,
}

impl Endpoints {
    /// The endpoints of the flags; a CA file that cannot be used, or one given for a
    /// URL without TLS, is an error now, before anything connects.
    pub fn from_args(args: &ConnectArgs) -> Result<Endpoints, InfraError> {
        let endpoint = |url: &str, service, flag, ca_file: &Option<PathBuf>| match ca_file {
            Some(path) => Endpoint::new(url).with_ca_file(service, flag, path),
            None => Ok(Endpoint::new(url)),
        };
        Ok(Endpoints {
            amqp: endpoint(&args.amqp_url, Service::Broker, "--amqp-ca-file (AMQP_CA_FILE)", &args.amqp_ca_file)?,
            redis: endpoint(&args.redis_url, Service::Redis, "--redis-ca-file (REDIS_CA_FILE)", &args.redis_ca_file)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_a_tls_url_and_a_readable_file() {
        let missing = Path::new("/nonexistent/ca.pem");
        let cases = [
            (Service::Broker, "amqp://guest:hunter2@h/", "--amqp-ca-file is set but the URL is not amqps:// (no TLS)"),
            (Service::Redis, "redis://:hunter2@h/", "--redis-ca-file is set but the URL is not rediss:// (no TLS)"),
            (Service::Broker, "amqps://guest:hunter2@h/", "CA file /nonexistent/ca.pem: cannot read it"),
            (Service::Redis, "rediss://:hunter2@h/", "CA file /nonexistent/ca.pem: cannot read it"),
        ];
        for (service, url, expected) in cases {
            let flag = if service == Service::Broker { "--amqp-ca-file" } else { "--redis-ca-file" };
            let e = Endpoint::new(url).with_ca_file(service, flag, missing).expect_err(url);
            let text = crate::Report(&e).to_string();
            assert!(text.contains(expected) && text.contains(":***@h/"), "{text}");
            assert!(!text.contains("hunter2") && !e.is_retryable(), "{text}");
        }
    }

    #[test]
    fn the_flags_give_both_endpoints() {
        let args = |amqp_ca_file: Option<&str>| ConnectArgs {
            amqp_url: "amqp://guest:hunter2@h/".into(),
            redis_url: "rediss://:hunter2@h/".into(),
            amqp_ca_file: amqp_ca_file.map(PathBuf::from),
            redis_ca_file: None,
            prefix: "p".into(),
            settings: "s.json".into(),
        };
        let both = Endpoints::from_args(&args(None)).expect("no CA file is fine");
        assert!(!both.amqp.is_tls() && both.redis.is_tls() && both.redis.ca().is_none());
        let e = Endpoints::from_args(&args(Some("/etc/ca.pem"))).expect_err("a CA file for amqp://");
        assert!(
            crate::Report(&e).to_string().contains("--amqp-ca-file (AMQP_CA_FILE) is set"),
            "{}",
            crate::Report(&e)
        );
    }

    #[test]
    fn tls_is_read_from_the_scheme_and_debug_hides_the_password() {
        for (url, tls) in [
            ("amqps://h/", true),
            ("AMQPS://h/", true),
            ("rediss://h/", true),
            ("amqp://h/", false),
            ("redis://h", false),
            ("h", false),
        ] {
            assert_eq!(Endpoint::new(url).is_tls(), tls, "{url}");
        }
        let e = Endpoint::from("rediss://:hunter2@h:6380/");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        assert_eq!(e.redacted(), "rediss://:***@h:6380/");
    }
}
