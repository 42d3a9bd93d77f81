/* config.h - the model config: TransformerLens's HookedTransformerConfig, its numeric fields, in
 * one place. Every layer (the model, the trainer, config files, the Lua binding) fills a
 * mw_config through mw_config_default + its fields and then mw_config_finish, the only code that
 * fills defaults and derived fields and validates. The Lua side reads the finished config back
 * (mw_config_get) instead of computing defaults a second time.
 *
 * "Unset" (Python's None, or a field left out that TransformerLens derives) is -1 in the integer
 * and float fields that TransformerLens derives: n_heads, d_vocab, d_vocab_out, d_mlp, attn_scale,
 * initializer_range, seed; 0 in d_model, d_head, n_layers, n_ctx (required). Enum fields with a
 * None member (normalization_type) use it for Python's None; act_fn's MW_ACT_NONE means unset.
 */
#ifndef MW_CONFIG_H
#define MW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* Enum fields: each enum's values and their TransformerLens spellings, once.
 * X(ID, "spelling"); the first row is the value 0. */
#define MW_NORM_LIST(X) X(NONE, "None") X(LN, "LN") X(LNPRE, "LNPre") X(RMS, "RMS") X(RMSPRE, "RMSPre")
#define MW_POS_LIST(X)  X(STANDARD, "standard") X(SHORTFORMER, "shortformer") X(ROTARY, "rotary")
#define MW_ACT_LIST(X)  X(NONE, "None") X(GELU_NEW, "gelu_new") X(GELU, "gelu") X(RELU, "relu") X(SILU, "silu") \
    X(GELU_PYTORCH_TANH, "gelu_pytorch_tanh") X(GELU_FAST, "gelu_fast") X(SOLU, "solu") X(SOLU_LN, "solu_ln")

typedef enum {
#define MW_X(id, s) MW_NORM_##id,
    MW_NORM_LIST(MW_X)
#undef MW_X
    MW_NORM_COUNT
} mw_norm;
typedef enum {
#define MW_X(id, s) MW_POS_##id,
    MW_POS_LIST(MW_X)
#undef MW_X
    MW_POS_COUNT
} mw_posemb;
typedef enum {
#define MW_X(id, s) MW_ACT_##id,
    MW_ACT_LIST(MW_X)
#undef MW_X
    MW_ACT_COUNT
} mw_actfn;

typedef struct mw_config {
    int64_t d_model, d_head, n_heads, n_layers, n_ctx, d_vocab, d_vocab_out, d_mlp;
    mw_actfn act_fn;
    int attn_only;
    mw_norm normalization_type;
    mw_posemb positional_embedding_type;
    int use_attn_result;
    int use_attn_scale;
    double attn_scale;          /* the divisor of the scores when use_attn_scale; -1: sqrt(d_head) */
    double eps;                 /* LayerNorm epsilon, 1e-5 */
    double initializer_range;   /* std of the normal init of every W_*; -1: 0.8/sqrt(d_model) */
    int64_t seed;               /* -1: no seed given (the default generator is used) */
    /* rotary positions: the first rotary_dim dims of each q/k head rotate (-1: d_head), by
     * angles pos * rotary_base^(-2i/rotary_dim); pairs (i, i + rotary_dim/2) as GPT-NeoX and
     * Llama, or adjacent pairs (2i, 2i+1) as GPT-J (rotary_adjacent_pairs) */
    int64_t rotary_dim;
    double rotary_base;         /* 10000 */
    int rotary_adjacent_pairs;
    int gated_mlp;              /* post = act(x @ W_gate) * (x @ W_in + b_in) */
    int64_t n_key_value_heads;  /* -1: every head has its own K and V; else grouped-query attention */
    int parallel_attn_mlp;      /* attention and MLP both read resid_pre (GPT-J, GPT-NeoX) */
    int final_rms;              /* ln_final is RMSNorm (with RMS blocks: what they use anyway) */
} mw_config;

/* The fields, for code that walks them (the Lua binding, config files):
 * X(field, kind) with kind INT, BOOL, FLOAT or ENUM. */
#define MW_CONFIG_FIELDS(X)                                                                     \
    X(d_model, INT) X(d_head, INT) X(n_heads, INT) X(n_layers, INT) X(n_ctx, INT) X(d_vocab, INT) \
    X(d_vocab_out, INT) X(d_mlp, INT) X(act_fn, ENUM) X(attn_only, BOOL)                        \
    X(normalization_type, ENUM) X(positional_embedding_type, ENUM) X(use_attn_result, BOOL)     \
    X(use_attn_scale, BOOL) X(attn_scale, FLOAT) X(eps, FLOAT) X(initializer_range, FLOAT)      \
    X(seed, INT) X(rotary_dim, INT) X(rotary_base, FLOAT) X(rotary_adjacent_pairs, BOOL)        \
    X(gated_mlp, BOOL) X(n_key_value_heads, INT) X(parallel_attn_mlp, BOOL) X(final_rms, BOOL)

typedef enum { MW_CF_INT, MW_CF_BOOL, MW_CF_FLOAT, MW_CF_ENUM } mw_config_kind;

typedef struct mw_config_field {
    const char *name;
    mw_config_kind kind;
    size_t offset;              /* into mw_config */
    const char *const *names;   /* ENUM: the spellings, value i = names[i]; NULL-terminated */
    int none_value;             /* ENUM: the value Python's None maps to, -1 when None is refused */
} mw_config_field;

/* the table of fields, NULL-name terminated */
extern const mw_config_field mw_config_fields[];
/* the field named name, or NULL */
const mw_config_field *mw_config_field_find(const char *name);

/* TransformerLens's defaults (see the top of this file for "unset"). */
void mw_config_default(mw_config *c);
/* Checks the fields and fills the derived ones as HookedTransformerConfig.__post_init__ does:
 * n_heads = d_model / d_head, d_mlp = 4 d_model (0 when attn_only), d_vocab_out = d_vocab,
 * attn_scale = sqrt(d_head) (when use_attn_scale), initializer_range = 0.8/sqrt(d_model).
 * d_vocab may stay unset (a tokenizer sets it later; mw_model_new requires it).
 * -1 with a message "HookedTransformerConfig: <field> ..." naming the field on bad values. */
int mw_config_finish(mw_config *c);

/* Enum spellings: the value of a spelling (-1 with a message listing the accepted ones) and the
 * spelling of a value (NULL when out of range). */
int mw_config_enum_parse(const mw_config_field *f, const char *spelling);
const char *mw_config_enum_name(const mw_config_field *f, int value);

/* Config files (TransformerLens's config.json, cJSON): the core's fields of a JSON object into c
 * (mw_config_default first; other names are left to the caller; null is Python's None, as in
 * the Lua binding), and c's fields as a new JSON object (None as null) the caller may extend
 * and must cJSON_Delete. -1 / NULL with a message naming the field. */
struct cJSON;
int mw_config_from_json(mw_config *c, const struct cJSON *obj);
struct cJSON *mw_config_to_json(const mw_config *c);

/* sets field f to Python's None: an enum's None member, -1 ("unset") in INT and FLOAT fields;
 * a BOOL keeps its default. -1 with a message for an enum that has no None. */
int mw_config_set_none(mw_config *c, const mw_config_field *f);

/* generic access by the table: integers (INT, BOOL, ENUM) as int64, FLOAT as double */
int64_t mw_config_get_int(const mw_config *c, const mw_config_field *f);
double mw_config_get_float(const mw_config *c, const mw_config_field *f);
void mw_config_set_int(mw_config *c, const mw_config_field *f, int64_t v);
void mw_config_set_float(mw_config *c, const mw_config_field *f, double v);

#endif
