//! `users`: users, API tokens, quotas and the audit log, and authentication.
//!
//! A token is `kvm_<id>_<secret>`: the id is public (lists, revocation), the secret is
//! shown once and stored only as its SHA-256. Root on the daemon's unix socket acts as the
//! built-in admin `admin`; everyone else presents a token (`Authorization: Bearer ...`).

use super::context::{parse_name, Context};
use kvmctl_core::{Caller, Error, QuotaLimits, Role};
use kvmctl_store::{AuditRecord, QuotaOverride, TokenRecord, UserRecord};
use kvmctl_types::api::{
    AuditEntry, Quota, QuotaSetRequest, Token, TokenCreateRequest, TokenCreated, User, UserCreateRequest, UserUpdateRequest,
};
use rand_core::RngCore;
use sha2::Digest;

/// Most days a token may live.
pub const MAX_TOKEN_DAYS: u32 = 3650;

pub(crate) fn user_view(u: UserRecord) -> User {
    User { name: u.name, role: u.role, disabled: u.disabled, custom_sizing: u.custom_sizing, created_at: u.created_at }
}

fn token_view(t: TokenRecord) -> Token {
    let now = kvmctl_store::unix_now();
    let state = if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    Token {
        id: t.id,
        user: t.user_name,
        description: t.description,
        state: state.into(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
    }
}

pub(crate) fn hash_hex(secret: &str) -> String {
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The caller a token stands for, or why it stands for no one. Never logs the token.
pub async fn authenticate_token(ctx: &Context, token: &str) -> Result<Caller, Error> {
    let bad = || Error::Unauthenticated("the token is not valid; create one with `kvmctl token create`".into());
    let rest = token.strip_prefix("kvm_").ok_or_else(bad)?;
    let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
    if id.len() != 12 || !id.bytes().all(|c| c.is_ascii_hexdigit()) || secret.is_empty() || secret.len() > 128 {
        return Err(bad());
    }
    let t = ctx.store.token_get(id).await?.ok_or_else(bad)?;
    // Both sides are hashes of fixed length: comparing them leaks nothing about the secret.
    if t.hash != hash_hex(secret) {
        return Err(bad());
    }
    if t.revoked_at.is_some() {
        return Err(Error::Unauthenticated(format!("token {id} was revoked; create a new one with `kvmctl token create`")));
    }
    if t.expires_at.is_some_and(|e| e <= kvmctl_store::unix_now()) {
        return Err(Error::Unauthenticated(format!("token {id} has expired; create a new one with `kvmctl token create`")));
    }
    let u = ctx.store.user_get(&t.user_name).await?.ok_or_else(bad)?;
    if u.disabled {
        return Err(Error::Unauthenticated(format!("user {} is disabled", u.name)));
    }
    // When a token was last used is bookkeeping: a database that cannot record it does not
    // refuse the request, but it is logged.
    if let Err(e) = ctx.store.token_touch(id).await {
        tracing::warn!(token = %id, error = %kvmctl_core::error::chain(&e), "cannot record the token's last use");
    }
    Ok(Caller { name: u.name, role: Role::parse(&u.role).unwrap_or(Role::User), custom_sizing: u.custom_sizing })
}

/// The limits in force for `owner`: `None` for admins, who have no quota.
pub(crate) async fn limits_of(ctx: &Context, owner: &str) -> Result<Option<QuotaLimits>, Error> {
    let Some(u) = ctx.store.user_get(owner).await? else { return Ok(Some(ctx.config.quota_defaults())) };
    if u.role == "admin" {
        return Ok(None);
    }
    Ok(Some(ctx.store.quota_get(owner).await?.over(&ctx.config.quota_defaults())))
}

pub async fn whoami(ctx: &Context, caller: &Caller) -> Result<User, Error> {
    match ctx.store.user_get(&caller.name).await? {
        Some(u) => Ok(user_view(u)),
        None => Err(Error::NotFound { kind: "user", name: caller.name.clone() }),
    }
}

pub async fn user_list(ctx: &Context, caller: &Caller) -> Result<Vec<User>, Error> {
    caller.require_admin("listing users")?;
    Ok(ctx.store.user_list().await?.into_iter().map(user_view).collect())
}

/// A user by name: admins see anyone, users themselves only.
pub(crate) async fn user_visible(ctx: &Context, caller: &Caller, name: &str) -> Result<UserRecord, Error> {
    let name = parse_name("name", name)?.to_string();
    let not_found = || Error::NotFound { kind: "user", name: name.clone() };
    if !caller.is_admin() && caller.name != name {
        return Err(not_found());
    }
    ctx.store.user_get(&name).await?.ok_or_else(not_found)
}

pub async fn user_get(ctx: &Context, caller: &Caller, name: &str) -> Result<User, Error> {
    user_visible(ctx, caller, name).await.map(user_view)
}

pub async fn user_create(ctx: &Context, caller: &Caller, req: UserCreateRequest) -> Result<User, Error> {
    caller.require_admin("creating users")?;
    let name = parse_name("name", &req.name)?.to_string();
    let role = req.role.as_deref().unwrap_or("user");
    if Role::parse(role).is_none() {
        return Err(Error::invalid("role", format!("{role:?} is not admin or user")));
    }
    let rec = UserRecord {
        name: name.clone(),
        role: role.into(),
        disabled: false,
        custom_sizing: req.custom_sizing.unwrap_or(true),
        created_at: 0,
    };
    let made = ctx.store.user_insert(&rec).await.map_err(|e| match e {
        kvmctl_store::StoreError::Exists { .. } => Error::Conflict(format!("a user named {name} exists already")),
        e => e.into(),
    })?;
    tracing::info!(user = %name, role, by = %caller.name, "user created");
    Ok(user_view(made))
}

pub async fn user_update(ctx: &Context, caller: &Caller, name: &str, req: UserUpdateRequest) -> Result<User, Error> {
    caller.require_admin("changing users")?;
    let rec = user_visible(ctx, caller, name).await?;
    if let Some(r) = req.role.as_deref() {
        if Role::parse(r).is_none() {
            return Err(Error::invalid("role", format!("{r:?} is not admin or user")));
        }
    }
    if rec.name == caller.name && (req.disabled == Some(true) || req.role.as_deref() == Some("user")) {
        return Err(Error::Conflict("you cannot disable yourself or take your own admin role; ask another admin".into()));
    }
    ctx.store.user_update(&rec.name, req.role.as_deref(), req.disabled, req.custom_sizing).await?;
    tracing::info!(user = %rec.name, by = %caller.name, ?req, "user changed");
    user_get(ctx, caller, &rec.name).await
}

pub async fn token_create(ctx: &Context, caller: &Caller, req: TokenCreateRequest) -> Result<TokenCreated, Error> {
    let user = match req.user.as_deref() {
        Some(u) if u != caller.name => {
            parse_name("user", u)?;
            caller.require_admin("creating tokens for other users")?;
            user_visible(ctx, caller, u).await?.name
        }
        _ => caller.name.clone(),
    };
    let description = req.description.unwrap_or_default();
    if description.len() > 200 || description.chars().any(char::is_control) {
        return Err(Error::invalid("description", "at most 200 characters, no control characters"));
    }
    let expires_at = match req.expires_in_days {
        None => None,
        Some(d) if (1..=MAX_TOKEN_DAYS).contains(&d) => Some(kvmctl_store::unix_now() + i64::from(d) * 86_400),
        Some(d) => return Err(Error::invalid("expires_in_days", format!("{d} is out of range; use 1 to {MAX_TOKEN_DAYS}"))),
    };
    let id = random_hex(6);
    let secret = random_hex(24);
    let rec = TokenRecord {
        id: id.clone(),
        user_name: user.clone(),
        description,
        hash: hash_hex(&secret),
        created_at: 0,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    ctx.store.token_insert(&rec).await?;
    tracing::info!(token = %id, user = %user, by = %caller.name, "token created");
    let made = ctx.store.token_get(&id).await?.ok_or_else(|| Error::Internal("token vanished".into()))?;
    Ok(TokenCreated { token: format!("kvm_{id}_{secret}"), info: token_view(made) })
}

pub async fn token_list(ctx: &Context, caller: &Caller, user: Option<&str>) -> Result<Vec<Token>, Error> {
    let of = match user {
        Some(u) => Some(user_visible(ctx, caller, u).await?.name),
        None if caller.is_admin() => None,
        None => Some(caller.name.clone()),
    };
    Ok(ctx.store.token_list(of.as_deref()).await?.into_iter().map(token_view).collect())
}

pub async fn token_revoke(ctx: &Context, caller: &Caller, id: &str) -> Result<(), Error> {
    let scope = caller.owner_scope();
    if !ctx.store.token_revoke(id, scope).await? {
        return Err(Error::NotFound { kind: "token", name: id.to_owned() });
    }
    tracing::info!(token = %id, by = %caller.name, "token revoked");
    Ok(())
}

pub async fn quota_get(ctx: &Context, caller: &Caller, name: &str) -> Result<Quota, Error> {
    let u = user_visible(ctx, caller, name).await?;
    let used = ctx.store.usage_of(&u.name).await?;
    let limits = limits_of(ctx, &u.name).await?;
    let overrides = ctx.store.quota_get(&u.name).await?;
    Ok(Quota {
        user: u.name,
        unlimited: limits.is_none(),
        max_vms: limits.map(|l| l.vms),
        max_vcpus: limits.map(|l| l.vcpus),
        max_memory_mib: limits.map(|l| l.memory_mib),
        max_disk_gib: limits.map(|l| l.disk_gib),
        max_forwards: limits.map(|l| l.forwards),
        overridden: [
            ("vms", overrides.vms),
            ("vcpus", overrides.vcpus),
            ("memory_mib", overrides.memory_mib),
            ("disk_gib", overrides.disk_gib),
            ("forwards", overrides.forwards),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.to_owned())
        .collect(),
        used_vms: used.vms,
        used_vcpus: used.vcpus,
        used_memory_mib: used.memory_mib,
        used_disk_gib: used.disk_gib,
        used_forwards: used.forwards,
    })
}

pub async fn quota_set(ctx: &Context, caller: &Caller, name: &str, req: QuotaSetRequest) -> Result<Quota, Error> {
    caller.require_admin("setting quotas")?;
    let u = user_visible(ctx, caller, name).await?;
    let mut q = ctx.store.quota_get(&u.name).await?;
    // Absent fields keep their override; `reset` lists the ones to put back to the default.
    for f in &req.reset {
        match f.as_str() {
            "vms" => q.vms = None,
            "vcpus" => q.vcpus = None,
            "memory_mib" => q.memory_mib = None,
            "disk_gib" => q.disk_gib = None,
            "forwards" => q.forwards = None,
            other => return Err(Error::invalid("reset", format!("{other:?} is not vms, vcpus, memory_mib, disk_gib or forwards"))),
        }
    }
    for (field, v, max) in [
        ("max_vms", req.max_vms, 100_000),
        ("max_vcpus", req.max_vcpus, 1_000_000),
        ("max_memory_mib", req.max_memory_mib, 1 << 40),
        ("max_disk_gib", req.max_disk_gib, 1 << 30),
        ("max_forwards", req.max_forwards, 65_535),
    ] {
        if let Some(v) = v.filter(|v| *v > max) {
            return Err(Error::invalid(field, format!("{v} is out of range; use 0 to {max}")));
        }
    }
    let set = QuotaOverride {
        vms: req.max_vms.or(q.vms),
        vcpus: req.max_vcpus.or(q.vcpus),
        memory_mib: req.max_memory_mib.or(q.memory_mib),
        disk_gib: req.max_disk_gib.or(q.disk_gib),
        forwards: req.max_forwards.or(q.forwards),
    };
    ctx.store.quota_set(&u.name, &set).await?;
    tracing::info!(user = %u.name, by = %caller.name, ?set, "quota set");
    quota_get(ctx, caller, &u.name).await
}

/// The error for a refused reservation: the first limit the request would exceed, with the
/// amounts (or, when a concurrent change already freed room, a retry hint).
/// The owner's quota refusal when `extra` more does not fit within `limits` (named like
/// create's); `None` when it fits (so the refusal was the node's room). A failed read is
/// the error itself.
pub(crate) async fn quota_refusal_if_over(
    ctx: &Context,
    owner: &str,
    limits: Option<&QuotaLimits>,
    extra: &kvmctl_core::Usage,
) -> Option<Error> {
    let l = limits?;
    match ctx.store.usage_of(owner).await {
        Ok(usage) if kvmctl_core::auth::quota_check(l, &usage, extra).is_err() => Some(quota_refusal(ctx, owner, l, extra).await),
        Err(e) => Some(e.into()),
        _ => None,
    }
}

pub(crate) async fn quota_refusal(ctx: &Context, owner: &str, limits: &QuotaLimits, requested: &kvmctl_core::Usage) -> Error {
    match ctx.store.usage_of(owner).await {
        Ok(used) => match kvmctl_core::auth::quota_check(limits, &used, requested) {
            Err(e) => e,
            Ok(()) => Error::Conflict(format!("the quota of {owner} was full a moment ago; try again")),
        },
        Err(e) => e.into(),
    }
}

/// The refusal of `bytes` more stored data (a snapshot's files, a clone's base) past the
/// disk quota `max_disk_gib` of `owner`.
pub(crate) async fn disk_refusal(ctx: &Context, owner: &str, max_disk_gib: Option<u64>, bytes: u64) -> Error {
    match ctx.store.usage_of(owner).await {
        Ok(used) => Error::QuotaExceeded {
            limit: "disk_gib".into(),
            max: max_disk_gib.unwrap_or(0),
            used: used.disk_gib,
            requested: bytes.div_ceil(1 << 30),
        },
        Err(e) => e.into(),
    }
}

pub async fn audit_list(
    ctx: &Context,
    caller: &Caller,
    user: Option<&str>,
    since: Option<i64>,
    limit: Option<u32>,
) -> Result<Vec<AuditEntry>, Error> {
    caller.require_admin("reading the audit log")?;
    let limit = limit.unwrap_or(100).clamp(1, 10_000);
    Ok(ctx
        .store
        .audit_list(user, since, limit)
        .await?
        .into_iter()
        .map(|a| AuditEntry {
            id: a.id,
            at: a.at,
            request_id: a.request_id,
            user: a.user_name,
            method: a.method,
            path: a.path,
            status: a.status,
            outcome: a.outcome,
        })
        .collect())
}

/// Records one state-changing request (best effort: a failure is logged, not returned).
/// Most audit rows of unauthenticated requests written per minute: anyone who can reach
/// the daemon can send those, and must not be able to grow the database without end. The
/// rest of a minute's are counted and summed up in one row when the next is written.
pub(crate) const ANONYMOUS_AUDIT_PER_MINUTE: u32 = 60;

pub(crate) async fn audit_record(ctx: &Context, rec: AuditRecord) {
    let mut rec = rec;
    if rec.user_name.is_none() {
        let minute = ctx.clock.now() / 60;
        let mut w = ctx.anonymous_audit.lock().expect("audit window poisoned");
        if w.0 != minute {
            let dropped = w.2;
            *w = (minute, 0, 0);
            if dropped > 0 {
                rec.outcome = format!("{} ({dropped} more unauthenticated requests the minute before were not recorded)", rec.outcome);
            }
        }
        if w.1 >= ANONYMOUS_AUDIT_PER_MINUTE {
            w.2 += 1;
            return;
        }
        w.1 += 1;
    }
    if let Err(e) = ctx.store.audit_insert(&rec).await {
        tracing::error!(error = %kvmctl_core::error::chain(&e), request_id = %rec.request_id, "cannot write the audit log");
    }
}

/// Most SSH keys one user may save.
pub const SSH_KEYS_PER_USER: u32 = 32;

fn ssh_key_view(k: kvmctl_store::SshKeyRecord) -> kvmctl_types::api::SshKey {
    kvmctl_types::api::SshKey { id: k.id, name: k.name, public_key: k.public_key, fingerprint: k.fingerprint, created_at: k.created_at }
}

/// The SSH keys saved in `name`'s profile (their own, or any user's for admins).
pub async fn ssh_key_list(ctx: &Context, caller: &Caller, name: &str) -> Result<Vec<kvmctl_types::api::SshKey>, Error> {
    let u = user_visible(ctx, caller, name).await?;
    Ok(ctx.store.ssh_key_list(&u.name).await?.into_iter().map(ssh_key_view).collect())
}

/// Saves an SSH public key in `name`'s profile: one valid OpenSSH key line, once.
pub async fn ssh_key_add(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    req: kvmctl_types::api::SshKeyCreateRequest,
) -> Result<kvmctl_types::api::SshKey, Error> {
    let u = user_visible(ctx, caller, name).await?;
    let label = req.name.trim();
    let label_ok = |c: char| c.is_alphanumeric() || " ._@-".contains(c);
    if label.is_empty() || label.chars().count() > 64 || !label.chars().all(label_ok) {
        return Err(Error::invalid("name", "give the key a label of 1 to 64 letters, digits, spaces, '.', '_', '@' or '-' (like laptop)"));
    }
    let line = req.public_key.trim();
    if line.len() > 16 * 1024 || line.contains('\n') {
        return Err(Error::invalid("public_key", "one OpenSSH public key line (the contents of ~/.ssh/id_ed25519.pub), at most 16 KiB"));
    }
    kvmctl_cloudinit::seed::ssh_key_check(line).map_err(|m| Error::invalid("public_key", m))?;
    let parsed = russh::keys::PublicKey::from_openssh(line).map_err(|e| {
        Error::invalid("public_key", format!("not an OpenSSH public key ({e}); paste the contents of ~/.ssh/id_ed25519.pub"))
    })?;
    let rec = kvmctl_store::SshKeyRecord {
        id: random_hex(8),
        user: u.name.clone(),
        name: label.to_owned(),
        public_key: line.to_owned(),
        fingerprint: parsed.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
        created_at: kvmctl_store::unix_now(),
    };
    match ctx.store.ssh_key_insert(&rec, SSH_KEYS_PER_USER).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::invalid(
                "public_key",
                format!("{} has {SSH_KEYS_PER_USER} saved keys, the most allowed; remove one first", u.name),
            ))
        }
        Err(kvmctl_store::StoreError::Exists { .. }) => {
            return Err(Error::Conflict(format!("this key ({}) is saved already", rec.fingerprint)));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ssh_key_view(rec))
}

/// Removes a key from `name`'s profile.
pub async fn ssh_key_delete(ctx: &Context, caller: &Caller, name: &str, id: &str) -> Result<(), Error> {
    let u = user_visible(ctx, caller, name).await?;
    if !ctx.store.ssh_key_delete(&u.name, id).await? {
        return Err(Error::NotFound { kind: "ssh key", name: id.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_hashed_and_random() {
        assert_eq!(super::hash_hex("abc").len(), 64);
        assert_ne!(super::random_hex(24), super::random_hex(24));
        assert_eq!(super::random_hex(6).len(), 12);
    }
}
