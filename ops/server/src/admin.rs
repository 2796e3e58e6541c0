//! Operations behind the CLI and the admin API: admins (argon2id password
//! hashes; there is no default admin, the first comes from
//! `diemcau-ops admin create`), claim tokens, communes.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use diemcau_ops_api::{Commune, TokenCreated, Validate as _, ValidationError};

use crate::store::{Store, StoreError};
use crate::util;

/// An admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid input")]
    Invalid(#[from] ValidationError),
    #[error("password must be 12 to 256 characters")]
    WeakPassword,
    #[error("cannot hash password: {0}")]
    Hash(String),
}

/// Hashes a password with argon2id (default parameters).
pub fn hash_password(password: &str) -> Result<String, AdminError> {
    let mut salt = [0u8; 16];
    util::fill_random(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AdminError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Hash(e.to_string()))
}

/// Checks a password against a stored hash (false on a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Creates an admin. `password` `None` generates one, which is returned.
pub async fn create_admin(
    store: &Store,
    user: &str,
    password: Option<&str>,
) -> Result<String, AdminError> {
    diemcau_ops_api::validate_helpers::check_token_chars("user", user, 64)?;
    let password = match password {
        Some(p) => p.to_owned(),
        None => util::random_secret(18),
    };
    if !(12..=256).contains(&password.chars().count()) {
        return Err(AdminError::WeakPassword);
    }
    let hash = hash_password(&password)?;
    store.create_admin(user, &hash, util::now()).await?;
    Ok(password)
}

/// Creates a claim token; the secret is only in the answer.
pub async fn create_token(
    store: &Store,
    uses: u32,
    expires_in_s: u64,
    commune: Option<&str>,
) -> Result<TokenCreated, StoreError> {
    let token = format!("dc1_{}", util::random_secret(24));
    let now = util::now();
    let expires_at = now.saturating_add(i64::try_from(expires_in_s).unwrap_or(i64::MAX / 2));
    store
        .create_token(&util::sha256_hex(&token), uses, expires_at, commune, now)
        .await?;
    Ok(TokenCreated {
        token,
        uses,
        expires_at,
        commune: commune.map(str::to_owned),
    })
}

/// Adds a commune after validating it.
pub async fn add_commune(store: &Store, id: &str, name: &str) -> Result<Commune, AdminError> {
    let c = Commune {
        id: id.to_owned(),
        name: name.trim().to_owned(),
    };
    c.validate()?;
    store.add_commune(&c.id, &c.name, util::now()).await?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_roundtrip() {
        let h = super::hash_password("correct horse battery").unwrap();
        assert!(super::verify_password("correct horse battery", &h));
        assert!(!super::verify_password("wrong", &h));
        assert!(!super::verify_password("x", "not a hash"));
    }
}
