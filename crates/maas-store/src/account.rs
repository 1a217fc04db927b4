//! Users, SSH keys and API tokens.

use async_trait::async_trait;
use chrono::Utc;
use maas_core::account::{ApiToken, SshKey, TokenKeys, User, validate_ssh_key, validate_username};
use maas_core::ids::*;
use maas_core::repo::{RepoResult, RepositoryError, UserRepository};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::{api_token, app_user, oauth_nonce, ssh_key};
use crate::{SqlStore, db_err, unique_as};

fn user_from(r: app_user::Model) -> User {
    User {
        id: UserId(r.id),
        username: r.username,
        email: r.email,
        is_admin: r.is_admin,
        password_hash: r.password_hash,
        created: r.created,
    }
}

fn token_from(r: api_token::Model) -> ApiToken {
    ApiToken {
        id: TokenId(r.id),
        user: UserId(r.user_id),
        name: r.name,
        consumer_key: r.consumer_key,
        token_key: r.token_key,
        token_secret: r.token_secret,
        created: r.created,
    }
}

#[async_trait]
impl UserRepository for SqlStore {
    async fn user_create(
        &self,
        username: &str,
        email: &str,
        is_admin: bool,
        password_hash: Option<&str>,
    ) -> RepoResult<User> {
        validate_username(username)?;
        let r = app_user::ActiveModel {
            id: NotSet,
            username: Set(username.to_owned()),
            email: Set(email.to_owned()),
            is_admin: Set(is_admin),
            password_hash: Set(password_hash.map(str::to_owned)),
            created: Set(Utc::now()),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as("user", username))?;
        Ok(user_from(r))
    }

    async fn user_get(&self, username: &str) -> RepoResult<User> {
        app_user::Entity::find()
            .filter(app_user::Column::Username.eq(username))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(user_from)
            .ok_or_else(|| RepositoryError::not_found("user", username))
    }

    async fn user_list(&self) -> RepoResult<Vec<User>> {
        Ok(app_user::Entity::find()
            .order_by_asc(app_user::Column::Username)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(user_from)
            .collect())
    }

    async fn user_delete(&self, username: &str) -> RepoResult<()> {
        let res = app_user::Entity::delete_many()
            .filter(app_user::Column::Username.eq(username))
            .exec(&self.db)
            .await
            .map_err(|e| match db_err(e) {
                RepositoryError::Conflict { .. } => RepositoryError::Conflict {
                    kind: "user",
                    key: username.into(),
                    reason: "the user still owns machines".into(),
                },
                other => other,
            })?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("user", username));
        }
        Ok(())
    }

    async fn ssh_key_create(&self, user: UserId, key: &str) -> RepoResult<SshKey> {
        validate_ssh_key(key)?;
        app_user::Entity::find_by_id(user.0)
            .one(&self.db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| RepositoryError::not_found("user", user))?;
        let r = ssh_key::ActiveModel {
            id: NotSet,
            user_id: Set(user.0),
            key: Set(key.trim().to_owned()),
        }
        .insert(&self.db)
        .await
        .map_err(db_err)?;
        Ok(SshKey {
            id: SshKeyId(r.id),
            user: UserId(r.user_id),
            key: r.key,
        })
    }

    async fn ssh_key_list(&self, user: UserId) -> RepoResult<Vec<SshKey>> {
        Ok(ssh_key::Entity::find()
            .filter(ssh_key::Column::UserId.eq(user.0))
            .order_by_asc(ssh_key::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| SshKey {
                id: SshKeyId(r.id),
                user: UserId(r.user_id),
                key: r.key,
            })
            .collect())
    }

    async fn ssh_key_delete(&self, id: SshKeyId) -> RepoResult<()> {
        let res = ssh_key::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("ssh key", id));
        }
        Ok(())
    }

    async fn token_create(&self, user: UserId, name: &str) -> RepoResult<ApiToken> {
        app_user::Entity::find_by_id(user.0)
            .one(&self.db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| RepositoryError::not_found("user", user))?;
        let keys = TokenKeys::generate(&mut rand::rng());
        let r = api_token::ActiveModel {
            id: NotSet,
            user_id: Set(user.0),
            name: Set(name.to_owned()),
            consumer_key: Set(keys.consumer_key),
            token_key: Set(keys.token_key),
            token_secret: Set(keys.token_secret),
            created: Set(Utc::now()),
        }
        .insert(&self.db)
        .await
        .map_err(db_err)?;
        Ok(token_from(r))
    }

    async fn nonce_claim(
        &self,
        token_key: &str,
        nonce: &str,
        at: chrono::DateTime<Utc>,
        window_secs: i64,
    ) -> RepoResult<bool> {
        use sea_orm::sea_query::OnConflict;
        use std::sync::atomic::{AtomicU64, Ordering};
        // Forget what the timestamp window refuses anyway, now and then.
        static CLAIMS: AtomicU64 = AtomicU64::new(0);
        if CLAIMS.fetch_add(1, Ordering::Relaxed).is_multiple_of(512) {
            oauth_nonce::Entity::delete_many()
                .filter(
                    oauth_nonce::Column::SeenAt
                        .lt(at - chrono::Duration::seconds(window_secs.saturating_mul(2))),
                )
                .exec(&self.db)
                .await
                .map_err(db_err)?;
        }
        let res = oauth_nonce::Entity::insert(oauth_nonce::ActiveModel {
            token_key: Set(token_key.to_owned()),
            nonce: Set(nonce.to_owned()),
            seen_at: Set(at),
        })
        .on_conflict(
            OnConflict::columns([oauth_nonce::Column::TokenKey, oauth_nonce::Column::Nonce])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await
        .map_err(db_err)?;
        Ok(res == 1)
    }

    async fn token_get_by_key(&self, token_key: &str) -> RepoResult<ApiToken> {
        api_token::Entity::find()
            .filter(api_token::Column::TokenKey.eq(token_key))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(token_from)
            .ok_or_else(|| RepositoryError::not_found("token", token_key))
    }

    async fn token_list(&self, user: UserId) -> RepoResult<Vec<ApiToken>> {
        Ok(api_token::Entity::find()
            .filter(api_token::Column::UserId.eq(user.0))
            .order_by_asc(api_token::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(token_from)
            .collect())
    }

    async fn token_delete(&self, id: TokenId) -> RepoResult<()> {
        let res = api_token::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("token", id));
        }
        Ok(())
    }
}
