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

    /// A stable hash of a function's IR and of the names it refers to, linear in the
    /// function's size. The function's own name and the module's declaration numbers
    /// (`fnK = u0:N`) are left out: IR names functions and data by declaration number, so a
    /// function declared near the top renumbered every other, and printing each function's
    /// whole preamble cost O(imports) even for a build that compiles nothing. What is hashed:
    /// the signature; the stack slots, alias regions, global values (with the *names* of the
    /// symbols they refer to) and constants; of the functions and signatures declared in
    /// the function, those its instructions use, each with the name it links to; and every
    /// block and instruction as Cranelift prints them.
    pub(super) fn function_fingerprint(&self, func: &ir::Function) -> u64 {
        use std::fmt::Write as _;
        let mut h = HashWriter(xxhash_rust::xxh3::Xxh3::new());
        let _ = writeln!(h, "{}", func.signature);
        for (ss, slot) in func.dynamic_stack_slots.iter() {
            let _ = writeln!(h, "{ss} = {slot}");
        }
        for (ss, slot) in func.sized_stack_slots.iter() {
            let _ = writeln!(h, "{ss} = {slot}");
        }
        for (ar, data) in func.dfg.alias_regions.iter() {
            let _ = writeln!(h, "{ar} = {} {:?}", data.user_id, data.description);
        }
        for (gv, data) in &func.global_values {
            let _ = writeln!(h, "{gv} = {}", data.display(&func.dfg.mem_flags));
            if let ir::GlobalValueData::Symbol {
                name: ir::ExternalName::User(r),
                ..
            } = data
            {
                let _ = writeln!(h, "  -> {}", self.user_name(func, *r));
            }
        }
        for (c, value) in func.dfg.constants.iter() {
            let _ = writeln!(h, "{c} = {value}");
        }
        if let Some(limit) = func.stack_limit {
            let _ = writeln!(h, "stack_limit = {limit}");
        }
        // The declarations the instructions use, found in one pass over them.
        let mut used = UsedRefs::default();
        for block in func.layout.blocks() {
            for inst in func.layout.block_insts(block) {
                let _ = func.dfg.insts[inst].map(&mut used);
            }
        }
        for &et in &used.exception_tables {
            used.sigs.insert(func.dfg.exception_tables[et].signature());
        }
        for &f in &used.funcs {
            let ext = &func.dfg.ext_funcs[f];
            used.sigs.insert(ext.signature);
            let name = match ext.name {
                ir::ExternalName::User(r) => self.user_name(func, r),
                ref other => format!("{other:?}"),
            };
            let _ = writeln!(h, "{f} = {name} {ext:?}");
        }
        for &sig in &used.sigs {
            let _ = writeln!(h, "{sig} = {}", func.dfg.signatures[sig]);
        }
        let mut aliases =
            cranelift_codegen::entity::SecondaryMap::<ir::Value, Vec<ir::Value>>::new();
        for v in func.dfg.values() {
            if let Some(k) = func.dfg.value_alias_dest_for_serialization(v) {
                aliases[k].push(v);
            }
        }
        use cranelift_codegen::write::FuncWriter as _;
        let mut pw = cranelift_codegen::write::PlainWriter;
        for block in func.layout.blocks() {
            let _ = pw.write_block_header(&mut h, func, block, 4);
            for inst in func.layout.block_insts(block) {
                let _ = pw.write_instruction(&mut h, func, &aliases, inst, 4);
            }
        }
        h.0.digest().max(1)
    }

    /// The linkage name of user external name `r` of `func`.
    fn user_name(&self, func: &ir::Function, r: ir::UserExternalNameRef) -> String {
        let name = &func.params.user_named_funcs()[r];
        self.target_name(&ModuleRelocTarget::user(name.namespace, name.index))
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

/// Text written straight into a hash.
struct HashWriter(xxhash_rust::xxh3::Xxh3);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The function and signature declarations (and exception tables) instructions use,
/// collected by `InstructionData::map` (which visits every entity an instruction names).
#[derive(Default)]
struct UsedRefs {
    funcs: std::collections::BTreeSet<ir::FuncRef>,
    sigs: std::collections::BTreeSet<ir::SigRef>,
    exception_tables: std::collections::BTreeSet<ir::ExceptionTable>,
}

impl ir::instructions::InstructionMapper for &mut UsedRefs {
    fn map_value(&mut self, value: ir::Value) -> ir::Value {
        value
    }
    fn map_value_list(&mut self, value_list: ir::ValueList) -> ir::ValueList {
        value_list
    }
    fn map_global_value(&mut self, global_value: ir::GlobalValue) -> ir::GlobalValue {
        global_value
    }
    fn map_jump_table(&mut self, jump_table: ir::JumpTable) -> ir::JumpTable {
        jump_table
    }
    fn map_exception_table(&mut self, exception_table: ir::ExceptionTable) -> ir::ExceptionTable {
        self.exception_tables.insert(exception_table);
        exception_table
    }
    fn map_block_call(&mut self, block_call: ir::BlockCall) -> ir::BlockCall {
        block_call
    }
    fn map_block(&mut self, block: ir::Block) -> ir::Block {
        block
    }
    fn map_func_ref(&mut self, func_ref: ir::FuncRef) -> ir::FuncRef {
        self.funcs.insert(func_ref);
        func_ref
    }
    fn map_sig_ref(&mut self, sig_ref: ir::SigRef) -> ir::SigRef {
        self.sigs.insert(sig_ref);
        sig_ref
    }
    fn map_stack_slot(&mut self, stack_slot: ir::StackSlot) -> ir::StackSlot {
        stack_slot
    }
    fn map_dynamic_stack_slot(
        &mut self,
        dynamic_stack_slot: ir::DynamicStackSlot,
    ) -> ir::DynamicStackSlot {
        dynamic_stack_slot
    }
    fn map_constant(&mut self, constant: ir::Constant) -> ir::Constant {
        constant
    }
    fn map_immediate(&mut self, immediate: ir::Immediate) -> ir::Immediate {
        immediate
    }
}
