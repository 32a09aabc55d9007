//! Where Redis is and how to get in: the URL (or a cluster's seed list),
//! TLS files and the ACL user. Shown everywhere with the password hidden.

use std::path::PathBuf;

use redis::{ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use super::StoreError;

/// One Redis (or one Redis Cluster) and its credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis://` or `rediss://` (TLS), or a comma-separated Redis Cluster seed list.
    pub url: String,
    /// PEM CA bundle trusted instead of the system's roots (with `rediss://`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for Redis with `tls-auth-clients yes`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// ACL user and password; they replace those in the URL (with
    /// Sentinel: the master's, the URL's being the sentinels').
    pub username: Option<String>,
    pub password: Option<String>,
    /// With Sentinel: the master's name, and the URL lists the sentinels.
    pub sentinel_master: Option<String>,
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> RedisTarget {
        RedisTarget { url: url.into(), ..Default::default() }
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> RedisTarget {
        url.as_str().into()
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(t: &RedisTarget) -> RedisTarget {
        t.clone()
    }
}

/// The URLs with any password replaced by `***`.
impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_urls(&self.url))
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &redact_urls(&self.url))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sentinel_master", &self.sentinel_master)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`, for each of
/// comma-separated URLs; anything without a password is unchanged.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',').map(redact_url).collect::<Vec<_>>().join(",")
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The userinfo ends at the last `@` before the path: a password may hold `@`.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl RedisTarget {
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
    }

    pub fn is_tls(&self) -> bool {
        self.urls().iter().any(|u| u.starts_with("rediss://"))
    }

    /// The connection settings of one URL with the separate user and
    /// password put in.
    pub(crate) fn info(&self, url: &str) -> Result<ConnectionInfo, StoreError> {
        let info = url.into_connection_info().map_err(|e| StoreError::Config(format!("Redis URL {}: {e}; it looks like redis://[user:password@]host:port[/db] or rediss:// for TLS", redact_url(url))))?;
        let mut redis = info.redis_settings().clone();
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        Ok(info.set_redis_settings(redis))
    }

    /// A sentinel's connection settings: the URL's own credentials.
    pub(crate) fn sentinel_info(&self, url: &str) -> Result<ConnectionInfo, StoreError> {
        url.into_connection_info().map_err(|e| StoreError::Config(format!("Redis sentinel URL {}: {e}; it looks like redis://[user:password@]host:26379 or rediss:// for TLS", redact_url(url))))
    }

    /// The CA and client certificate files, read; None when none is set
    /// (the system's roots are used).
    pub(crate) fn certificates(&self) -> Result<Option<TlsCertificates>, StoreError> {
        if self.ca_file.is_none() && self.client_cert.is_none() && self.client_key.is_none() {
            return Ok(None);
        }
        if !self.is_tls() {
            return Err(StoreError::Config(format!(
                "RESERVOIR_REDIS_CA_FILE or a client certificate is set but the Redis URL {self} is not TLS: use rediss://"
            )));
        }
        let read = |p: &PathBuf, what: &str| std::fs::read(p).map_err(|e| StoreError::Config(format!("{what} {}: {e}", p.display())));
        let root_cert = self.ca_file.as_ref().map(|p| read(p, "RESERVOIR_REDIS_CA_FILE")).transpose()?;
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read(c, "RESERVOIR_REDIS_CLIENT_CERT")?, client_key: read(k, "RESERVOIR_REDIS_CLIENT_KEY")? }),
            (None, None) => None,
            _ => return Err(StoreError::Config("RESERVOIR_REDIS_CLIENT_CERT and RESERVOIR_REDIS_CLIENT_KEY go together: set both or neither".into())),
        };
        Ok(Some(TlsCertificates { client_tls, root_cert }))
    }

    /// What a failed connection attempt means for a user: retry (Redis is
    /// not up yet) or stop with what to fix (credentials, certificates).
    pub(crate) fn connect_error(&self, e: redis::RedisError) -> StoreError {
        let text = e.to_string();
        if e.kind() == redis::ErrorKind::AuthenticationFailed || text.contains("WRONGPASS") || text.contains("NOAUTH") {
            let user = self.username.clone().or_else(|| self.urls().first().and_then(|u| u.into_connection_info().ok()).and_then(|i| i.redis_settings().username().map(str::to_string)));
            return StoreError::Config(format!(
                "Redis at {self} refused the credentials of user {:?}: {text}. Check the user and password (in the URL, RESERVOIR_REDIS_USERNAME, RESERVOIR_REDIS_PASSWORD or RESERVOIR_REDIS_PASSWORD_FILE) and that the ACL user is on",
                user.as_deref().unwrap_or("default")
            ));
        }
        if self.is_tls() && tls_refused(&text) {
            return StoreError::Config(format!(
                "TLS to Redis at {self} failed: {text}. Check that the server's certificate is signed by the CA in RESERVOIR_REDIS_CA_FILE (or the system's roots) and names the host in the URL, and whether it wants a client certificate (RESERVOIR_REDIS_CLIENT_CERT/_KEY)"
            ));
        }
        StoreError::from(e)
    }
}

/// The handshake was refused (a certificate not trusted or not matching),
/// which a retry does not change; a reset during it is an outage instead.
fn tls_refused(text: &str) -> bool {
    ["certificate", "handshake", "alert", "wrong version number", "SSL routines"].iter().any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_wherever_a_target_is_shown() {
        assert_eq!(redact_urls("rediss://app:s3cr@t@h:6380/0"), "rediss://app:***@h:6380/0");
        assert_eq!(redact_urls("redis://:pw@a:1,redis://:pw@b:2"), "redis://:***@a:1,redis://:***@b:2");
        assert_eq!(redact_urls("redis://h:1"), "redis://h:1");
        assert_eq!(redact_urls("redis://user@h:1"), "redis://user@h:1");
        let t = RedisTarget { url: "rediss://u:hunter2@h:1".into(), password: Some("hunter3".into()), ..Default::default() };
        for shown in [t.to_string(), format!("{t:?}")] {
            assert!(!shown.contains("hunter"), "{shown}");
            assert!(shown.contains("rediss://u:***@h:1"), "{shown}");
        }
    }

    #[test]
    fn the_separate_user_and_password_replace_the_urls() {
        let t = RedisTarget { url: "redis://a:b@h:1".into(), username: Some("app".into()), password: Some("pw".into()), ..Default::default() };
        let info = t.info("redis://a:b@h:1").unwrap();
        assert_eq!((info.redis_settings().username(), info.redis_settings().password()), (Some("app"), Some("pw")));
        let err = RedisTarget { url: "redis://h:1".into(), ca_file: Some("/x".into()), ..Default::default() }.certificates().unwrap_err().to_string();
        assert!(err.contains("rediss://"), "{err}");
        let err = RedisTarget { url: "rediss://h:1".into(), client_cert: Some("/x".into()), ..Default::default() }.certificates().unwrap_err().to_string();
        assert!(err.contains("RESERVOIR_REDIS_CLIENT_KEY"), "{err}");
    }
}
