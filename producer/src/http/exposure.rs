//! Whether the shim may start without API keys: only where nobody else can reach it.
//!
//! A shim without keys accepts generation requests (GPU minutes) from anyone who
//! reaches its port. On a loopback address that is the operator alone; on any other
//! address it is every host on the network, so it is refused unless the operator
//! says `--allow-anonymous`. The decision is [`check`], a pure function.

use std::net::SocketAddr;

/// Why the shim refused to start open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to serve without API keys on {addr}, which other hosts can reach: set WARMLANE_API_KEYS \
     (--api-keys), listen on 127.0.0.1, or pass --allow-anonymous (WARMLANE_ALLOW_ANONYMOUS=true) to accept anyone"
)]
pub struct OpenToNetwork {
    /// The bound address.
    pub addr: SocketAddr,
}

/// Refuses a shim bound to a non-loopback address without API keys, unless
/// anonymous access was asked for. Pure.
pub fn check(addr: SocketAddr, has_api_keys: bool, allow_anonymous: bool) -> Result<(), OpenToNetwork> {
    if has_api_keys || allow_anonymous || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(OpenToNetwork { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_be_open() {
        let cases = [
            ("127.0.0.1:8080", false, false, true),
            ("[::1]:8080", false, false, true),
            ("0.0.0.0:8080", false, false, false),
            ("[::]:8080", false, false, false),
            ("10.1.2.3:8080", false, false, false),
            ("0.0.0.0:8080", true, false, true),
            ("0.0.0.0:8080", false, true, true),
            ("10.1.2.3:8080", true, true, true),
        ];
        for (addr, keys, anonymous, ok) in cases {
            let addr: SocketAddr = addr.parse().expect("address");
            assert_eq!(check(addr, keys, anonymous).is_ok(), ok, "{addr} keys={keys} anonymous={anonymous}");
        }
        let e = check("0.0.0.0:8080".parse().expect("address"), false, false).expect_err("refused");
        assert!(e.to_string().starts_with("refusing to serve without API keys on 0.0.0.0:8080"), "{e}");
    }
}
