//! Fleet rollout through etcd.
