/* checkpoint.h - model files into mw_tensor: .safetensors and PyTorch zip checkpoints.
 *
 * Loading maps the file and keeps it mapped while any tensor from it lives: float32 and int64
 * tensors are views into the map (zero-copy) when their bytes are aligned; other dtypes are
 * converted into new storages (f16, bf16, f64 -> float32; i32, i16, i8, u8, u16, u32, u64 ->
 * int64; bool stays bool, one byte 0 or 1). Tensors of a torch file that are views of one storage
 * (a transpose, a slice with a storage offset) share one mw_storage here too.
 *
 * PyTorch files are read without running any code: the zip's central directory is parsed here
 * (stored entries only; torch never compresses), and data.pkl goes through a restricted pickle
 * machine that knows the opcodes torch state dicts use and accepts only the globals needed to
 * rebuild tensors (torch._utils._rebuild_tensor_v2, _rebuild_parameter, the storage classes,
 * collections.OrderedDict). Any other global is refused with its name. Nested dicts (and lists)
 * of tensors flatten to dotted names ("model.w", "layers.0"); other values (ints, strings) are
 * skipped.
 *
 * Every length, offset, count and index read from a file is checked; bad input gives -1 and a
 * message naming the file and the tensor, field or pickle opcode.
 */
#ifndef MW_CHECKPOINT_H
#define MW_CHECKPOINT_H

#include "mw_tensor.h"

/* returned (besides -1) when the file cannot be opened at all (missing, a directory, no access),
 * so that callers can treat "not there" differently from "there but malformed" */
#define MW_CKPT_NOFILE (-2)

typedef struct mw_named_tensor {
    char *name;
    mw_tensor t;
} mw_named_tensor;

typedef struct mw_state_dict {
    int n;                       /* tensors, in file order (safetensors header / pickle order) */
    mw_named_tensor *items;
    int n_meta;                  /* safetensors "__metadata__" pairs (none for torch files) */
    char **meta_keys, **meta_values;
    const char *format;          /* "safetensors" or "torch" (static string) */
} mw_state_dict;

/* Loads a .safetensors file or a PyTorch zip checkpoint (.pth/.pt/.bin), told apart by their
 * first bytes. 0 on success; MW_CKPT_NOFILE or -1 with mw_error() set, out left empty. */
int mw_checkpoint_load(mw_state_dict *out, const char *path);
/* The same over bytes in memory (name used in messages). The caller keeps buf alive and unchanged
 * while any loaded tensor lives (float32 tensors may point into it). */
int mw_checkpoint_load_memory(mw_state_dict *out, const void *buf, size_t len, const char *name);
/* releases every tensor's reference and the names; leaves sd empty */
void mw_state_dict_free(mw_state_dict *sd);
/* the tensor named name, or NULL */
const mw_tensor *mw_state_dict_get(const mw_state_dict *sd, const char *name);

/* Writes n tensors (any strides; float32, int64 or bool) as .safetensors with optional metadata
 * pairs. Names must be unique and non-empty. 0 on success, -1 with mw_error() set. */
int mw_checkpoint_save(const char *path, int n, const char *const *names, const mw_tensor *const *ts,
                       int n_meta, const char *const *meta_keys, const char *const *meta_values);

#endif
