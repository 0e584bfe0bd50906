//! Azure OpenAI (`kind: azure_openai`): OpenAI's bodies on deployment-based paths, with the
//! API version in the query and the key in an `api-key` header.

use crate::json::{encode_path_segment, encode_query_value};
use crate::Operation;

/// Path and query for a deployment (the route's upstream model names the deployment).
pub(crate) fn path(prefix: &str, deployment: &str, op: Operation, api_version: &str) -> String {
    let method = match op {
        Operation::ChatCompletions => "chat/completions",
        Operation::Embeddings => "embeddings",
    };
    format!(
        "{prefix}/openai/deployments/{}/{method}?api-version={}",
        encode_path_segment(deployment),
        encode_query_value(api_version)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_and_versions_shape_the_path() {
        assert_eq!(
            path("", "gpt-4o-prod", Operation::ChatCompletions, "2024-10-21"),
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            path("/x", "emb/../y", Operation::Embeddings, "2024-10-21"),
            "/x/openai/deployments/emb%2F..%2Fy/embeddings?api-version=2024-10-21"
        );
    }
}
