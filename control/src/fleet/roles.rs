//! etcd users and roles of a fleet (authentication on): what each set of
//! credentials may touch.
//!
//! | role | may read | may write |
//! | --- | --- | --- |
//! | `fluxgate-<fleet>-gw-<gw>` (one gateway's agent) | `desired/<gw>`, `rulesets/…`, `files/…`, its own `gateways/<gw>` and `status/<gw>` | only `gateways/<gw>` and `status/<gw>` |
//! | `fluxgate-<fleet>-controller` | all of `/fluxgate/<fleet>/` | all of `/fluxgate/<fleet>/` |
//!
//! So a compromised gateway can lie about itself at most: it cannot write
//! another gateway's keys, any desired state, a ruleset or a rollout.
//! Pair it with TLS client certificates (`--client-cert-auth` on the
//! server): [`super::EtcdOptions`] takes a CA, a client certificate and
//! key, and a user.

use etcd_client::{Client, Permission};

use super::{FleetError, Keys, check_name};

/// The role (and user) name of gateway `gw`'s agent.
pub fn gateway_role(fleet: &str, gw: &str) -> String {
    format!("fluxgate-{fleet}-gw-{gw}")
}

/// The role name of the fleet's controllers.
pub fn controller_role(fleet: &str) -> String {
    format!("fluxgate-{fleet}-controller")
}

/// The permissions of gateway `gw`'s role.
pub fn gateway_permissions(keys: &Keys, gw: &str) -> Vec<Permission> {
    vec![
        Permission::read(keys.desired(gw)),
        Permission::read(keys.rulesets()).with_prefix(),
        Permission::read(keys.files()).with_prefix(),
        Permission::read_write(keys.gateway(gw)),
        Permission::read_write(keys.status(gw)),
    ]
}

async fn role_with(
    client: &Client,
    role: &str,
    perms: Vec<Permission>,
    user: &str,
    password: &str,
) -> Result<(), FleetError> {
    let mut auth = client.auth_client();
    auth.role_add(role).await?;
    for p in perms {
        auth.role_grant_permission(role, p).await?;
    }
    auth.user_add(user, password, None).await?;
    auth.user_grant_role(user, role).await?;
    Ok(())
}

/// Creates gateway `gw`'s role and a user of the same name with
/// `password` (as a user that may manage auth: root, or before auth is on).
pub async fn add_gateway_user(
    client: &Client,
    fleet: &str,
    gw: &str,
    password: &str,
) -> Result<String, FleetError> {
    check_name("gateway", gw)?;
    let keys = Keys::new(fleet)?;
    let name = gateway_role(fleet, gw);
    role_with(
        client,
        &name,
        gateway_permissions(&keys, gw),
        &name,
        password,
    )
    .await?;
    Ok(name)
}

/// Creates the fleet's controller role, and user `user` with it.
pub async fn add_controller_user(
    client: &Client,
    fleet: &str,
    user: &str,
    password: &str,
) -> Result<(), FleetError> {
    check_name("user", user)?;
    let keys = Keys::new(fleet)?;
    let role = controller_role(fleet);
    let perms = vec![Permission::read_write(keys.root()).with_prefix()];
    role_with(client, &role, perms, user, password).await
}

/// Turns authentication on: a `root` user (etcd's requirement) with
/// `root_password`, then `auth enable`.
pub async fn enable_auth(client: &Client, root_password: &str) -> Result<(), FleetError> {
    let mut auth = client.auth_client();
    auth.user_add("root", root_password, None).await?;
    auth.user_grant_role("root", "root").await?;
    auth.auth_enable().await?;
    Ok(())
}
