//! The resume token: the ConfigMap `sonde-events-token` in the agent's namespace, keys
//! `event.tokenKey` (the resourceVersion up to which every event was delivered) and
//! `event.tokenTimestamp` (when it was written), as the reference agent keeps it.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};

/// The token's ConfigMap.
pub const TOKEN_CONFIGMAP: &str = "sonde-events-token";
pub const TOKEN_KEY: &str = "event.tokenKey";
pub const TOKEN_TIMESTAMP: &str = "event.tokenTimestamp";

/// A token as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub resource_version: String,
    pub timestamp: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the events token ConfigMap {namespace}/{TOKEN_CONFIGMAP} cannot be {verb}: {detail}. \
         Fix: grant the agent's service account {rule} in the namespace {namespace} (the Role \
         sonde-cluster-duties in manifests/)"
    )]
    Forbidden {
        namespace: String,
        verb: &'static str,
        rule: String,
        detail: String,
    },
    #[error(
        "the events token ConfigMap {namespace}/{TOKEN_CONFIGMAP} cannot be {verb}: {detail}; \
         retrying"
    )]
    Failed {
        namespace: String,
        verb: &'static str,
        detail: String,
    },
}

/// Reads and writes the token.
#[derive(Clone)]
pub struct TokenStore {
    api: Api<ConfigMap>,
    namespace: String,
    /// The field manager of this agent's writes.
    manager: String,
}

impl TokenStore {
    pub fn new(client: Client, namespace: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            manager: format!("sonde/{identity}"),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn error(&self, verb: &'static str, err: kube::Error) -> TokenError {
        match &err {
            kube::Error::Api(status) if status.code == 403 => TokenError::Forbidden {
                namespace: self.namespace.clone(),
                verb,
                rule: crate::kube::apiserver::kind::rbac_rule(
                    "",
                    "configmaps",
                    &["get", "create", "patch"],
                ),
                detail: status.message.clone(),
            },
            _ => TokenError::Failed {
                namespace: self.namespace.clone(),
                verb,
                detail: err.to_string(),
            },
        }
    }

    /// The token, `None` when the ConfigMap or its key is missing (no leader wrote one yet).
    pub async fn read(&self) -> Result<Option<Token>, TokenError> {
        let cm = self
            .api
            .get_opt(TOKEN_CONFIGMAP)
            .await
            .map_err(|e| self.error("read", e))?;
        let data = cm.and_then(|c| c.data).unwrap_or_default();
        Ok(data
            .get(TOKEN_KEY)
            .filter(|rv| !rv.trim().is_empty())
            .map(|rv| Token {
                resource_version: rv.trim().to_string(),
                timestamp: data.get(TOKEN_TIMESTAMP).cloned(),
            }))
    }

    /// Writes `resource_version` (a merge patch; the ConfigMap is created when missing).
    pub async fn write(&self, resource_version: &str) -> Result<(), TokenError> {
        let data = BTreeMap::from([
            (TOKEN_KEY.to_string(), resource_version.to_string()),
            (TOKEN_TIMESTAMP.to_string(), Timestamp::now().to_string()),
        ]);
        let patch = serde_json::json!({ "data": data });
        let params = PatchParams {
            field_manager: Some(self.manager.clone()),
            ..PatchParams::default()
        };
        match self
            .api
            .patch(TOKEN_CONFIGMAP, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(self.error("patched", err)),
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(TOKEN_CONFIGMAP.into()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "sonde".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let post = PostParams {
            field_manager: Some(self.manager.clone()),
            ..PostParams::default()
        };
        match self.api.create(&post, &cm).await {
            Ok(_) => Ok(()),
            // Created by another writer between the two requests: patch it.
            Err(kube::Error::Api(status)) if status.code == 409 => self
                .api
                .patch(TOKEN_CONFIGMAP, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| self.error("patched", e)),
            Err(err) => Err(self.error("created", err)),
        }
    }
}
