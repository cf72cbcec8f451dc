//! Web console sessions and passwords (ADR 0013).
//!
//! A session is a token of kind `session` (`kvm_<id>_<secret>`, hashed like API tokens),
//! opened by a user name and password or an API token, ending 8 hours after login or at
//! logout; the HTTP layer carries it in an HttpOnly cookie. Passwords are argon2id PHC
//! strings. Failed logins are limited per user name and per client address.

use super::context::{parse_name, Context};
use super::users::{hash_hex, random_hex, user_view, user_visible};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use kvmctl_core::{Caller, Error};
use kvmctl_types::api::{PasswordSetRequest, Session, SessionOpenRequest};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lives after login.
pub const SESSION_SECONDS: i64 = 8 * 3600;
/// Failed logins allowed per user name, and per client address, in `WINDOW`.
const FAILS_ALLOWED: usize = 5;
const WINDOW: Duration = Duration::from_secs(60);
const PASSWORD_MIN_CHARS: usize = 10;
const PASSWORD_MAX_BYTES: usize = 256;

/// Failed logins in the last minute, by key (`user:NAME`, `addr:IP`). In memory: a restart
/// forgets them (ADR 0013).
#[derive(Default)]
pub struct LoginLimiter {
    fails: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// Refuses when any key has failed `FAILS_ALLOWED` times in the window.
    fn check(&self, keys: &[String]) -> Result<(), Error> {
        let mut fails = self.fails.lock().expect("login limiter poisoned");
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for k in keys {
            let Some(q) = fails.get_mut(k) else { continue };
            while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                q.pop_front();
            }
            if q.len() >= FAILS_ALLOWED {
                wait = wait.max(WINDOW - now.duration_since(q[0]));
            }
        }
        fails.retain(|_, q| !q.is_empty());
        if wait > Duration::ZERO {
            let secs = wait.as_secs() + 1;
            return Err(Error::TooManyRequests { message: format!("too many failed logins; try again in {secs} s"), retry_after: secs });
        }
        Ok(())
    }

    fn fail(&self, keys: &[String]) {
        let mut fails = self.fails.lock().expect("login limiter poisoned");
        // Bounded: an address spraying user names adds one key per name, each of at most
        // FAILS_ALLOWED entries, and the map is swept of expired keys on every check.
        if fails.len() > 100_000 {
            fails.clear();
        }
        for k in keys {
            let q = fails.entry(k.clone()).or_default();
            q.push_back(Instant::now());
            while q.len() > FAILS_ALLOWED {
                q.pop_front();
            }
        }
    }
}

fn wrong() -> Error {
    Error::Unauthenticated("the user name or password is wrong".into())
}

/// A hash to verify against when the user has no password, so both answers take as long.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash_password("kvmctl-no-such-password").unwrap_or_default());

fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

fn password_ok(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Checks `password` against `phc` (or, for a user without a password, against a dummy
/// hash, so both take as long) off the async threads: argon2 takes a fraction of a second.
async fn verify(password: String, phc: Option<String>) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        password_ok(&password, &phc) && known
    })
    .await
    .map_err(|e| Error::Internal(format!("password check: {e}")))
}

fn password_check(p: &str) -> Result<(), Error> {
    if p.chars().count() < PASSWORD_MIN_CHARS || p.len() > PASSWORD_MAX_BYTES {
        return Err(Error::invalid("password", format!("use {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_BYTES} bytes")));
    }
    if p.chars().any(char::is_control) {
        return Err(Error::invalid("password", "no control characters"));
    }
    Ok(())
}

/// Opens a session: the caller's view and the session token (for the cookie only).
pub async fn session_open(ctx: &Context, req: SessionOpenRequest, client: Option<std::net::IpAddr>) -> Result<(Session, String), Error> {
    let (user, password_change) = match (req.token, req.user, req.password) {
        (Some(token), None, None) => {
            let keys: Vec<String> = client.map(|a| format!("addr:{a}")).into_iter().collect();
            ctx.logins.check(&keys)?;
            match super::users::authenticate_token(ctx, &token).await {
                Ok(c) => (c.name, false),
                Err(e) => {
                    ctx.logins.fail(&keys);
                    return Err(e);
                }
            }
        }
        (None, Some(user), Some(password)) => {
            if user.len() > 64 || password.len() > PASSWORD_MAX_BYTES {
                return Err(wrong());
            }
            let mut keys = vec![format!("user:{user}")];
            keys.extend(client.map(|a| format!("addr:{a}")));
            ctx.logins.check(&keys)?;
            let stored = match parse_name("user", &user) {
                Ok(_) => ctx.store.user_password(&user).await?,
                Err(_) => None,
            };
            let change = stored.as_ref().is_some_and(|(_, c)| *c);
            if !verify(password, stored.map(|(phc, _)| phc)).await? {
                ctx.logins.fail(&keys);
                tracing::info!(user = %user, client = ?client, "web console login refused");
                return Err(wrong());
            }
            (user, change)
        }
        _ => return Err(Error::invalid("session", "send either user and password, or token")),
    };
    let u = ctx.store.user_get(&user).await?.ok_or_else(wrong)?;
    if u.disabled {
        return Err(Error::Unauthenticated(format!("user {} is disabled", u.name)));
    }
    let (id, secret) = (random_hex(6), random_hex(24));
    let expires_at = kvmctl_store::unix_now() + SESSION_SECONDS;
    ctx.store.session_insert(&id, &u.name, &hash_hex(&secret), expires_at).await?;
    tracing::info!(user = %u.name, session = %id, client = ?client, "web console session opened");
    Ok((Session { user: user_view(u), expires_at, password_change }, format!("kvm_{id}_{secret}")))
}

/// The session `token` stands for, if it is one (the id part of a well-formed token).
pub fn session_id(token: &str) -> Option<&str> {
    let id = token.strip_prefix("kvm_")?.split_once('_')?.0;
    (id.len() == 12 && id.bytes().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// Ends the session `token` (logout). A token that is not an open session is a 400.
pub async fn session_close(ctx: &Context, caller: &Caller, token: Option<&str>) -> Result<(), Error> {
    let id = token.and_then(session_id).ok_or_else(|| Error::invalid("session", "there is no web console session to end"))?;
    if !ctx.store.token_is_session(id).await? || !ctx.store.session_revoke(id).await? {
        return Err(Error::invalid("session", "there is no web console session to end"));
    }
    tracing::info!(user = %caller.name, session = %id, "web console session closed");
    Ok(())
}

/// The caller's session, as its page sees it (`token`: the session cookie's); `expires_at`
/// is 0 for a caller without one (a bearer token).
pub async fn session_get(ctx: &Context, caller: &Caller, token: Option<&str>) -> Result<Session, Error> {
    let u = ctx.store.user_get(&caller.name).await?.ok_or_else(wrong)?;
    let change = ctx.store.user_password(&caller.name).await?.is_some_and(|(_, c)| c);
    let expires_at = match token.and_then(session_id) {
        Some(id) => ctx.store.token_get(id).await?.filter(|t| t.user_name == u.name).and_then(|t| t.expires_at).unwrap_or(0),
        None => 0,
    };
    Ok(Session { user: user_view(u), expires_at, password_change: change })
}

/// Sets `name`'s password: an admin for another user (a first password, to be changed at the
/// next login; that user's sessions end), or a user for themself with the current one (their
/// other sessions end).
pub async fn password_set(ctx: &Context, caller: &Caller, name: &str, req: PasswordSetRequest, session: Option<&str>) -> Result<(), Error> {
    let u = user_visible(ctx, caller, name).await?;
    password_check(&req.password)?;
    let own = caller.name == u.name;
    if own {
        if let Some((phc, _)) = ctx.store.user_password(&u.name).await? {
            let keys = vec![format!("user:{}", u.name)];
            ctx.logins.check(&keys)?;
            let current = req.current.clone().ok_or_else(|| Error::invalid("current", "give your current password"))?;
            if !verify(current, Some(phc)).await? {
                ctx.logins.fail(&keys);
                return Err(Error::invalid("current", "the current password is wrong"));
            }
        }
    } else {
        caller.require_admin("setting another user's password")?;
    }
    let password = req.password.clone();
    let phc =
        tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|e| Error::Internal(format!("argon2: {e}")))??;
    ctx.store.user_password_set(&u.name, &phc, !own).await?;
    let keep = if own { session.and_then(session_id) } else { None };
    let ended = ctx.store.sessions_revoke_user(&u.name, keep).await?;
    tracing::info!(user = %u.name, by = %caller.name, sessions_ended = ended, "password set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_a_minute_then_429() {
        let l = LoginLimiter::default();
        let keys = vec!["user:alice".to_owned()];
        for _ in 0..FAILS_ALLOWED {
            l.check(&keys).unwrap();
            l.fail(&keys);
        }
        match l.check(&keys) {
            Err(Error::TooManyRequests { retry_after, .. }) => assert!((1..=60).contains(&retry_after)),
            r => panic!("{r:?}"),
        }
        // Another user name from elsewhere is not held up.
        l.check(&["user:bob".to_owned()]).unwrap();
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_ok("correct horse battery", &h));
        assert!(!password_ok("correct horse batterY", &h));
        assert!(!password_ok("x", "not a phc string"));
        assert!(password_check("short").is_err());
        assert!(password_check(&"x".repeat(257)).is_err());
        assert!(password_check("ten chars!").is_ok());
    }

    #[test]
    fn session_ids_are_read_from_well_formed_tokens_only() {
        assert_eq!(session_id("kvm_0123456789ab_secret"), Some("0123456789ab"));
        assert_eq!(session_id("kvm_0123_secret"), None);
        assert_eq!(session_id("bearer"), None);
    }
}
