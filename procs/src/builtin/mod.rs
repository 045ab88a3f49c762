//! Built-in procedures: `null`, `echo`, and the key-value procedures that tests and
//! benchmarks use (`kv_*` partitioned on the key, `rkv_*` on a replicated table).

mod kv;
pub mod scan;
mod sys;

pub use kv::{kv_args, KvRow, KEY_BYTES_MAX};
pub use sys::{decode_cluster_map, encode_cluster_map, NodeInfo, PartitionStats, SnapshotReply};

use crate::ids;
use crate::schema::PartitionDb;
use tabos_engine::{Access, Ctx, ProcDef, Registry, Scope};
use tabos_transport::Status;

fn null(_ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    Ok(())
}

fn echo(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    ctx.reply.extend_from_slice(ctx.args);
    Ok(())
}

/// Register the built-in procedures.
pub fn register(registry: &mut Registry<PartitionDb>) {
    let def = |id, name, access, scope, func| ProcDef {
        id,
        name,
        access,
        scope,
        func,
    };
    registry.register(def(
        ids::NULL,
        "null",
        Access::ReadOnly,
        Scope::Single,
        null,
    ));
    registry.register(def(
        ids::ECHO,
        "echo",
        Access::ReadOnly,
        Scope::Single,
        echo,
    ));
    registry.register(def(
        ids::KV_PUT,
        "kv_put",
        Access::ReadWrite,
        Scope::Single,
        kv::kv_put,
    ));
    registry.register(def(
        ids::KV_GET,
        "kv_get",
        Access::ReadOnly,
        Scope::Single,
        kv::kv_get,
    ));
    registry.register(def(
        ids::KV_DELETE,
        "kv_delete",
        Access::ReadWrite,
        Scope::Single,
        kv::kv_delete,
    ));
    registry.register(def(
        ids::RKV_PUT,
        "rkv_put",
        Access::ReadWrite,
        Scope::Broadcast,
        kv::rkv_put,
    ));
    registry.register(def(
        ids::RKV_GET,
        "rkv_get",
        Access::ReadOnly,
        Scope::Single,
        kv::rkv_get,
    ));
    registry.register(def(
        ids::SQL_SCAN,
        "sql_scan",
        Access::ReadOnly,
        Scope::Single,
        scan::sql_scan,
    ));
}
