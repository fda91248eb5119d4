//! Fingerprints of what a compiler defines, when it does not give its own: a stable hash of
//! a function's IR and of the names it refers to (IR names functions and data by declaration
//! number, which may differ between builds), or of a data object's bytes and relocations.

use cranelift_codegen::ir;
use cranelift_module::{DataId, FuncId, ModuleDeclarations, ModuleReloc, ModuleRelocTarget};

use super::*;

impl ZerolinkModule {
    /// The name a relocation target is known by, for fingerprints.
    pub(super) fn target_name(&self, target: &ModuleRelocTarget) -> String {
        match *target {
            ModuleRelocTarget::User { .. } if ModuleDeclarations::is_function(target) => {
                let id = FuncId::from_name(target);
                self.declarations
                    .get_function_decl(id)
                    .linkage_name(id)
                    .into_owned()
            }
            ModuleRelocTarget::User { .. } => {
                let id = DataId::from_name(target);
                self.declarations
                    .get_data_decl(id)
                    .linkage_name(id)
                    .into_owned()
            }
            ModuleRelocTarget::LibCall(libcall) => (self.libcall_names)(libcall),
            ref other => other.to_string(),
        }
    }

    /// A stable hash of a function's IR and of the names it refers to (IR names functions and
    /// data by declaration number, which may differ between builds).
    pub(super) fn function_fingerprint(&self, func: &ir::Function) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(func.display().to_string().as_bytes());
        for (_, name) in func.params.user_named_funcs().iter() {
            let target = ModuleRelocTarget::user(name.namespace, name.index);
            h.update(self.target_name(&target).as_bytes());
            h.update(&[0]);
        }
        h.digest().max(1)
    }

    pub(super) fn bytes_fingerprint(
        &self,
        tag: &[u8],
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(tag);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
        for r in relocs {
            h.update(&r.offset.to_le_bytes());
            h.update(format!("{:?}", r.kind).as_bytes());
            h.update(&r.addend.to_le_bytes());
            h.update(self.target_name(&r.name).as_bytes());
            h.update(&[0]);
        }
        h.digest().max(1)
    }
}
