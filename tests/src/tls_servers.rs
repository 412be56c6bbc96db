//! TLS servers a test owns: a CA and a server certificate for `localhost` made with
//! rcgen, a RabbitMQ node whose only listener is TLS, and a Redis server on a TLS
//! port only, both asking for a password of the test's own. Both stop when the value
//! is dropped, also when the test fails.

use crate::servers::{free_port, wait_port, RabbitNode};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Certificate files under a test's directory.
pub struct Pki {
    /// The CA that signed the servers' certificate (PEM).
    pub ca_file: PathBuf,
    /// A CA that signed nothing here: trusting it instead is the "wrong CA" case.
    pub other_ca_file: PathBuf,
    /// The servers' certificate, valid for `localhost` only (not for 127.0.0.1).
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key_file: PathBuf,
}

impl Pki {
    /// Generates the CAs and the server certificate into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("PKI dir");
        let ca = certificate_authority("warmlane test CA");
        let other = certificate_authority("warmlane other CA");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("writing a PEM file");
            path
        };
        Pki {
            ca_file: write("ca.pem", ca.pem()),
            other_ca_file: write("other-ca.pem", other.pem()),
            cert_file: write("server.pem", cert.pem()),
            key_file: write("server.key", key.serialize_pem()),
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

/// A RabbitMQ node and a Redis server that speak TLS only, with [`TlsServers::password`].
pub struct TlsServers {
    /// The RabbitMQ node (`amqps://` on its port).
    pub rabbit: RabbitNode,
    /// The Redis server (`rediss://` on its port).
    pub redis: TlsRedis,
    /// The password of both (RabbitMQ user `warmlane`, Redis `requirepass`).
    pub password: String,
}

impl TlsServers {
    /// Starts both under `dir` with `pki`'s server certificate.
    pub fn start(dir: &Path, pki: &Pki) -> TlsServers {
        let password = format!("tls-pw-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let redis = TlsRedis::start(&dir.join("redis"), pki, &password);
        let config = format!(
            "ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
             ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n\
             default_user = warmlane\ndefault_pass = {password}\n",
            pki.ca_file.display(),
            pki.cert_file.display(),
            pki.key_file.display(),
        );
        let rabbit = RabbitNode::start_tls(&dir.join("rabbit"), &config);
        TlsServers { rabbit, redis, password }
    }

    /// The `amqps://` URL of the node, reached as `host`, password included.
    pub fn amqp_url(&self, host: &str) -> String {
        format!("amqps://warmlane:{}@{host}:{}/%2f", self.password, self.rabbit.port)
    }

    /// The `rediss://` URL of the Redis server, reached as `host`, password included.
    pub fn redis_url(&self, host: &str) -> String {
        format!("rediss://:{}@{host}:{}/", self.password, self.redis.port)
    }
}

/// `redis-server --port 0 --tls-port P`: no plain listener, clients need no certificate.
pub struct TlsRedis {
    /// The TLS port.
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(dir: &Path, pki: &Pki, password: &str) -> TlsRedis {
        std::fs::create_dir_all(dir).expect("Redis dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.cert_file)
            .arg("--tls-key-file")
            .arg(&pki.key_file)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca_file)
            .args(["--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test starts its own Redis and needs redis-server with TLS (apt-get install redis-server)");
        let redis = TlsRedis { port, child };
        wait_port(port, "Redis's TLS port (is redis-server built with TLS?)", 20);
        redis
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
