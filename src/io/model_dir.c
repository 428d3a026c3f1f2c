/* model_dir.c — see model_dir.h. */
#include "io/model_dir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/json.h"

#define CONFIG_CAP (16u << 20)

static const char *const FILE_NAMES[MD_FILE_COUNT] = {
    [MD_TOKENIZER_JSON] = "tokenizer.json",
    [MD_TOKENIZER_CONFIG] = "tokenizer_config.json",
    [MD_SPECIAL_TOKENS_MAP] = "special_tokens_map.json",
    [MD_GENERATION_CONFIG] = "generation_config.json",
    [MD_CHAT_TEMPLATE_JINJA] = "chat_template.jinja",
    [MD_CHAT_TEMPLATE_JSON] = "chat_template.json",
    [MD_PREPROCESSOR_CONFIG] = "preprocessor_config.json",
    [MD_PROCESSOR_CONFIG] = "processor_config.json",
    [MD_TOKENIZER_MODEL] = "tokenizer.model",
};

typedef struct md_shard { char *name; st_file *st; } md_shard;
typedef struct md_slot { const st_tensor *t; size_t shard; } md_slot;

struct model_dir {
    char *path;
    void *memory;        /* model_dir_open_memory: the buffer its shard borrows (owned) */
    char *config_path;
    cJSON *config;
    const char *model_type, *text_model_type;
    const cJSON *text_config, *vision_config, *architectures;

    md_shard *shards;
    size_t n_shards;
    md_slot *table;      /* open addressing, power-of-two capacity, NULL t = empty */
    size_t table_cap;
    md_slot *sorted;     /* every tower tensor in name order */
    size_t n_tensors;
    uint64_t file_bytes, tensor_bytes;
    cJSON *index;
    const char *sidecar_rel; /* the sidecar's path relative to the folder (static string) */

    st_file *sidecar;
    char **others;
    size_t n_others;
    char *files[MD_FILE_COUNT];
    int template_in_tokenizer_config;
};

/* ---- small helpers ------------------------------------------------------ */

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static int is_regular(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* ---- tensor table ------------------------------------------------------- */

static optiq_status build_table(model_dir *md, optiq_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < md->n_shards; i++) n += st_count(md->shards[i].st);
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    md->table = calloc(cap, sizeof *md->table);
    md->sorted = malloc((n ? n : 1) * sizeof *md->sorted);
    if (!md->table || !md->sorted) return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory for %zu tensors", md->path, n);
    md->table_cap = cap;
    for (size_t s = 0; s < md->n_shards; s++) {
        const st_file *f = md->shards[s].st;
        md->file_bytes += st_file_size(f);
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_at(f, i);
            size_t h = (size_t)hash_name(t->name) & (cap - 1);
            while (md->table[h].t) {
                if (strcmp(md->table[h].t->name, t->name) == 0)
                    return err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s' is in both %s and %s", md->path, t->name,
                                   md->shards[md->table[h].shard].name, md->shards[s].name);
                h = (h + 1) & (cap - 1);
            }
            md->table[h] = (md_slot){t, s};
            md->sorted[md->n_tensors++] = (md_slot){t, s};
            md->tensor_bytes += t->nbytes;
        }
    }
    return OPTIQ_OK;
}

static int cmp_slot(const void *a, const void *b) {
    return strcmp(((const md_slot *)a)->t->name, ((const md_slot *)b)->t->name);
}

/* Slot index of a name in the table, or (size_t)-1. */
static size_t slot_of(const model_dir *md, const char *name) {
    if (!md->table_cap) return (size_t)-1;
    size_t h = (size_t)hash_name(name) & (md->table_cap - 1);
    while (md->table[h].t) {
        if (strcmp(md->table[h].t->name, name) == 0) return h;
        h = (h + 1) & (md->table_cap - 1);
    }
    return (size_t)-1;
}

const st_tensor *model_dir_find(const model_dir *md, const char *name, size_t *shard) {
    size_t h = slot_of(md, name);
    if (h == (size_t)-1) return NULL;
    if (shard) *shard = md->table[h].shard;
    return md->table[h].t;
}

/* ---- index cross-check -------------------------------------------------- */

static int shard_index(const model_dir *md, const char *name) {
    for (size_t i = 0; i < md->n_shards; i++)
        if (strcmp(md->shards[i].name, name) == 0) return (int)i;
    return -1;
}

static optiq_status check_index(model_dir *md, const char *index_path, optiq_error *err) {
    optiq_status st = json_load_file(index_path, NULL, JSON_DEFAULT_CAP, &md->index, err);
    if (st != OPTIQ_OK) return st;
    const char *L = index_path;
    if (!cJSON_IsObject(md->index))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: is %s, expected an object with a weight_map", L,
                       json_type_name(md->index));
    const cJSON *wm;
    if ((st = json_get_object(md->index, L, "weight_map", &wm, err)) != OPTIQ_OK) return st;
    char *listed = calloc(md->n_shards ? md->n_shards : 1, 1);
    char *seen = calloc(md->table_cap ? md->table_cap : 1, 1);
    if (!listed || !seen) {
        free(listed), free(seen);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", L);
    }
    for (const cJSON *e = wm->child; e && st == OPTIQ_OK; e = e->next) {
        if (!cJSON_IsString(e)) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map entry '%s' is %s, expected a file name", L, e->string,
                         json_type_name(e));
            break;
        }
        int s = shard_index(md, e->valuestring);
        if (s < 0 && !md->sidecar &&
            (strcmp(e->valuestring, MD_SIDECAR_NAME) == 0 ||
             strcmp(e->valuestring, MD_SIDECAR_SUBDIR "/" MD_SIDECAR_NAME) == 0))
            continue; /* the sidecar was removed: the folder is text-only, as mlx-lm sees it */
        if (s < 0 && md->sidecar && strcmp(e->valuestring, md->sidecar_rel) == 0) {
            /* mlx-optiq lists the sidecar's tensors too, so that index-reading
             * loaders (mlx-vlm) find the tower; they must be in the sidecar */
            if (!st_find(md->sidecar, e->string))
                st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map lists tensor '%s' in %s, but the sidecar lacks it",
                             L, e->string, e->valuestring);
            continue;
        }
        if (s < 0) {
            char *p = join(md->path, e->valuestring);
            int exists = p && is_regular(p);
            free(p);
            if (exists)
                st = err_set(err, OPTIQ_ERR_FORMAT,
                             "%s: weight_map puts tensor '%s' in %s, which is not a language-tower shard "
                             "(model*.safetensors)",
                             L, e->string, e->valuestring);
            else
                st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map puts tensor '%s' in %s, which does not exist", L,
                             e->string, e->valuestring);
            break;
        }
        listed[s] = 1;
        size_t h = slot_of(md, e->string);
        if (h == (size_t)-1)
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map lists tensor '%s' in %s, but no shard has it", L,
                         e->string, e->valuestring);
        else if ((int)md->table[h].shard != s)
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map lists tensor '%s' in %s, but it is in %s", L,
                         e->string, e->valuestring, md->shards[md->table[h].shard].name);
        else if (seen[h])
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map lists tensor '%s' twice", L, e->string);
        else
            seen[h] = 1;
    }
    for (size_t i = 0; i < md->n_shards && st == OPTIQ_OK; i++)
        if (!listed[i])
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: shard %s is on disk but the weight_map names none of its tensors",
                         L, md->shards[i].name);
    for (size_t i = 0; i < md->n_tensors && st == OPTIQ_OK; i++)
        if (!seen[slot_of(md, md->sorted[i].t->name)])
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s' of %s is missing from the weight_map", L,
                         md->sorted[i].t->name, md->shards[md->sorted[i].shard].name);
    free(listed);
    free(seen);
    return st;
}

/* ---- opening ------------------------------------------------------------ */

/* The checks every config gets once parsed into md->config. */
static optiq_status config_fields(model_dir *md, optiq_error *err) {
    optiq_status st;
    const char *L = md->config_path;
    if (!cJSON_IsObject(md->config))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: is %s, expected an object", L, json_type_name(md->config));
    if ((st = json_get_string(md->config, L, "model_type", &md->model_type, err)) != OPTIQ_OK) return st;
    if ((st = json_get_object_opt(md->config, L, "text_config", &md->text_config, err)) != OPTIQ_OK) return st;
    if ((st = json_get_object_opt(md->config, L, "vision_config", &md->vision_config, err)) != OPTIQ_OK) return st;
    if ((st = json_get_array_opt(md->config, L, "architectures", &md->architectures, err)) != OPTIQ_OK) return st;
    if (md->text_config &&
        (st = json_get_string_or(md->config, L, "text_config.model_type", NULL, &md->text_model_type, err)) != OPTIQ_OK)
        return st;
    return OPTIQ_OK;
}

static optiq_status load_config(model_dir *md, optiq_error *err) {
    md->config_path = join(md->path, "config.json");
    if (!md->config_path) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (!is_regular(md->config_path))
        return err_set(err, OPTIQ_ERR_IO, "%s: not a model folder: config.json is missing", md->path);
    optiq_status st = json_load_file(md->config_path, NULL, CONFIG_CAP, &md->config, err);
    if (st != OPTIQ_OK) return st;
    return config_fields(md, err);
}

static optiq_status scan_folder(model_dir *md, char ***shard_names, size_t *n_shards, optiq_error *err) {
    DIR *d = opendir(md->path);
    if (!d) return err_set(err, OPTIQ_ERR_IO, "%s: cannot open folder: %s", md->path, strerror(errno));
    size_t cap_s = 0, cap_o = 0;
    optiq_status st = OPTIQ_OK;
    struct dirent *de;
    while ((de = readdir(d)) && st == OPTIQ_OK) {
        const char *n = de->d_name;
        if (n[0] == '.' || !ends_with(n, ".safetensors")) continue;
        char *full = join(md->path, n);
        if (!full) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            break;
        }
        int reg = is_regular(full);
        free(full);
        if (!reg || strcmp(n, MD_SIDECAR_NAME) == 0) continue;
        /* mlx-lm: glob("model*.safetensors") */
        int tower = strncmp(n, "model", 5) == 0;
        char ***list = tower ? shard_names : &md->others;
        size_t *cnt = tower ? n_shards : &md->n_others, *cap = tower ? &cap_s : &cap_o;
        if (*cnt == *cap) {
            size_t nc = *cap ? 2 * *cap : 8;
            char **nl = realloc(*list, nc * sizeof *nl);
            if (!nl) {
                st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
                break;
            }
            *list = nl, *cap = nc;
        }
        if (!((*list)[*cnt] = strdup(n))) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        else (*cnt)++;
    }
    closedir(d);
    if (*n_shards) qsort(*shard_names, *n_shards, sizeof **shard_names, cmp_str);
    if (md->n_others) qsort(md->others, md->n_others, sizeof *md->others, cmp_str);
    return st;
}

static optiq_status find_files(model_dir *md, optiq_error *err) {
    for (int k = 0; k < MD_FILE_COUNT; k++) {
        char *p = join(md->path, FILE_NAMES[k]);
        if (!p) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        if (is_regular(p)) md->files[k] = p;
        else free(p);
    }
    if (md->files[MD_TOKENIZER_CONFIG]) {
        cJSON *tc;
        optiq_status st = json_load_file(md->files[MD_TOKENIZER_CONFIG], NULL, JSON_DEFAULT_CAP, &tc, err);
        if (st != OPTIQ_OK) return st;
        const cJSON *t = cJSON_IsObject(tc) ? cJSON_GetObjectItemCaseSensitive(tc, "chat_template") : NULL;
        md->template_in_tokenizer_config = cJSON_IsString(t) || (cJSON_IsArray(t) && cJSON_GetArraySize(t) > 0);
        cJSON_Delete(tc);
    }
    return OPTIQ_OK;
}

optiq_status model_dir_open(const char *path, model_dir **out, optiq_error *err) {
    if (!path || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "model_dir_open: NULL argument");
    *out = NULL;
    model_dir *md = calloc(1, sizeof *md);
    if (!md || !(md->path = strdup(path))) {
        free(md);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    size_t len = strlen(md->path);
    while (len > 1 && md->path[len - 1] == '/') md->path[--len] = 0;

    char **names = NULL;
    size_t n_names = 0;
    struct stat sb;
    optiq_status st;
    if (stat(md->path, &sb) != 0) {
        st = err_set(err, OPTIQ_ERR_IO, "%s: cannot open folder: %s", md->path, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode)) {
        st = err_set(err, OPTIQ_ERR_IO, "%s: not a folder", md->path);
        goto fail;
    }
    if ((st = load_config(md, err)) != OPTIQ_OK) goto fail;
    if ((st = scan_folder(md, &names, &n_names, err)) != OPTIQ_OK) goto fail;
    if (n_names == 0) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: no language-tower weights (no model*.safetensors file)", md->path);
        goto fail;
    }
    md->shards = calloc(n_names, sizeof *md->shards);
    if (!md->shards) {
        st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_names; i++) {
        char *p = join(md->path, names[i]);
        if (!p) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        md->shards[i].name = names[i];
        names[i] = NULL;
        md->n_shards++;
        st = st_open(p, &md->shards[i].st, err);
        free(p);
        if (st != OPTIQ_OK) goto fail;
    }
    if ((st = build_table(md, err)) != OPTIQ_OK) goto fail;
    qsort(md->sorted, md->n_tensors, sizeof *md->sorted, cmp_slot);

    /* the sidecar: optiq/ first, then beside the shards (mlx-optiq's resolver) */
    static const char *const SIDECAR_PLACES[] = {MD_SIDECAR_SUBDIR "/" MD_SIDECAR_NAME, MD_SIDECAR_NAME};
    for (size_t i = 0; i < 2 && !md->sidecar && st == OPTIQ_OK; i++) {
        char *sc = join(md->path, SIDECAR_PLACES[i]);
        if (!sc) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (is_regular(sc)) {
            st = st_open(sc, &md->sidecar, err);
            md->sidecar_rel = SIDECAR_PLACES[i];
        }
        free(sc);
    }
    if (st != OPTIQ_OK) goto fail;

    char *index_path = join(md->path, MD_INDEX_NAME);
    if (!index_path) {
        st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (is_regular(index_path)) st = check_index(md, index_path, err);
    free(index_path);
    if (st != OPTIQ_OK) goto fail;
    if ((st = find_files(md, err)) != OPTIQ_OK) goto fail;
    free(names);
    *out = md;
    return OPTIQ_OK;
fail:
    for (size_t i = 0; i < n_names; i++) free(names ? names[i] : NULL);
    free(names);
    model_dir_close(md);
    return st;
}

optiq_status model_dir_open_memory(const char *config_json, st_file *shard, void *shard_data, model_dir **out,
                                   optiq_error *err) {
    optiq_status st;
    if (!out) {
        st_close(shard);
        free(shard_data);
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "model_dir_open_memory: NULL argument");
    }
    *out = NULL;
    model_dir *md = calloc(1, sizeof *md);
    if (!md || !(md->path = strdup("<memory>")) || !(md->config_path = strdup("<memory>/config.json"))) {
        if (md) free(md->path);
        free(md);
        st_close(shard);
        free(shard_data);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    /* From here model_dir_close releases the shard and its buffer. */
    md->memory = shard_data;
    if (shard) {
        md->shards = calloc(1, sizeof *md->shards);
        if (!md->shards) {
            st_close(shard);
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        md->shards[0] = (md_shard){NULL, shard};
        md->n_shards = 1;
        if (!(md->shards[0].name = strdup("model.safetensors"))) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    if (!config_json) {
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: no config text", md->config_path);
        goto fail;
    }
    if ((st = json_parse(config_json, strlen(config_json), md->config_path, &md->config, err)) != OPTIQ_OK) goto fail;
    if ((st = config_fields(md, err)) != OPTIQ_OK) goto fail;
    if (!shard) {
        st = err_set(err, OPTIQ_ERR_FORMAT, "%s: no language-tower weights (no shard given)", md->path);
        goto fail;
    }
    if ((st = build_table(md, err)) != OPTIQ_OK) goto fail;
    qsort(md->sorted, md->n_tensors, sizeof *md->sorted, cmp_slot);
    *out = md;
    return OPTIQ_OK;
fail:
    model_dir_close(md);
    return st;
}

void model_dir_close(model_dir *md) {
    if (!md) return;
    for (size_t i = 0; i < md->n_shards; i++) {
        st_close(md->shards[i].st);
        free(md->shards[i].name);
    }
    free(md->memory);
    free(md->shards);
    free(md->table);
    free(md->sorted);
    cJSON_Delete(md->index);
    cJSON_Delete(md->config);
    st_close(md->sidecar);
    for (size_t i = 0; i < md->n_others; i++) free(md->others[i]);
    free(md->others);
    for (int k = 0; k < MD_FILE_COUNT; k++) free(md->files[k]);
    free(md->config_path);
    free(md->path);
    free(md);
}

/* ---- queries ------------------------------------------------------------ */

const char *model_dir_path(const model_dir *md) { return md->path; }
const cJSON *model_dir_config(const model_dir *md) { return md->config; }
const char *model_dir_config_path(const model_dir *md) { return md->config_path; }
const char *model_dir_model_type(const model_dir *md) { return md->model_type; }
const char *model_dir_text_model_type(const model_dir *md) { return md->text_model_type; }
const cJSON *model_dir_text_config(const model_dir *md) { return md->text_config; }
const cJSON *model_dir_vision_config(const model_dir *md) { return md->vision_config; }
const cJSON *model_dir_architectures(const model_dir *md) { return md->architectures; }
size_t model_dir_shard_count(const model_dir *md) { return md->n_shards; }
const st_file *model_dir_shard(const model_dir *md, size_t i) { return i < md->n_shards ? md->shards[i].st : NULL; }
const char *model_dir_shard_name(const model_dir *md, size_t i) { return i < md->n_shards ? md->shards[i].name : NULL; }
size_t model_dir_tensor_count(const model_dir *md) { return md->n_tensors; }
uint64_t model_dir_tower_file_bytes(const model_dir *md) { return md->file_bytes; }
uint64_t model_dir_tower_tensor_bytes(const model_dir *md) { return md->tensor_bytes; }
const cJSON *model_dir_index(const model_dir *md) { return md->index; }
const st_file *model_dir_sidecar(const model_dir *md) { return md->sidecar; }
const char *model_dir_sidecar_rel(const model_dir *md) { return md->sidecar ? md->sidecar_rel : NULL; }
size_t model_dir_other_count(const model_dir *md) { return md->n_others; }
const char *model_dir_other(const model_dir *md, size_t i) { return i < md->n_others ? md->others[i] : NULL; }
const char *md_file_name(md_file which) { return which < MD_FILE_COUNT ? FILE_NAMES[which] : NULL; }
const char *model_dir_file(const model_dir *md, md_file which) { return which < MD_FILE_COUNT ? md->files[which] : NULL; }

const st_tensor *model_dir_tensor_at(const model_dir *md, size_t i, size_t *shard) {
    if (i >= md->n_tensors) return NULL;
    if (shard) *shard = md->sorted[i].shard;
    return md->sorted[i].t;
}

const char *model_dir_chat_template_source(const model_dir *md) {
    if (md->files[MD_CHAT_TEMPLATE_JINJA]) return FILE_NAMES[MD_CHAT_TEMPLATE_JINJA];
    if (md->files[MD_CHAT_TEMPLATE_JSON]) return FILE_NAMES[MD_CHAT_TEMPLATE_JSON];
    if (md->template_in_tokenizer_config) return FILE_NAMES[MD_TOKENIZER_CONFIG];
    return NULL;
}

/* ---- language-key lookups ----------------------------------------------- */

const cJSON *model_dir_lang_item(const model_dir *md, const char *key, const char **where) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(md->config, key);
    if (j && !cJSON_IsNull(j)) {
        if (where) *where = "";
        return j;
    }
    j = md->text_config ? cJSON_GetObjectItemCaseSensitive(md->text_config, key) : NULL;
    if (j && !cJSON_IsNull(j)) {
        if (where) *where = "text_config";
        return j;
    }
    return NULL;
}

/* Full key path for messages: "key" or "text_config.key". */
static const char *lang_path(char *buf, size_t cap, const char *where, const char *key) {
    snprintf(buf, cap, "%s%s%s", where, *where ? "." : "", key);
    return buf;
}

optiq_status model_dir_lang_int(const model_dir *md, const char *key, int64_t *out, optiq_error *err) {
    const char *where;
    const cJSON *j = model_dir_lang_item(md, key, &where);
    char p[256];
    if (!j)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s missing (looked at the top level and in text_config)",
                       md->config_path, key);
    if (!json_as_int(j, out))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %s, expected an integer", md->config_path,
                       lang_path(p, sizeof p, where, key), json_type_name(j));
    return OPTIQ_OK;
}

optiq_status model_dir_lang_int_or(const model_dir *md, const char *key, int64_t def, int64_t *out, optiq_error *err) {
    if (!model_dir_lang_item(md, key, NULL)) {
        *out = def;
        return OPTIQ_OK;
    }
    return model_dir_lang_int(md, key, out, err);
}

optiq_status model_dir_lang_double_or(const model_dir *md, const char *key, double def, double *out,
                                      optiq_error *err) {
    const char *where;
    const cJSON *j = model_dir_lang_item(md, key, &where);
    char p[256];
    if (!j) {
        *out = def;
        return OPTIQ_OK;
    }
    if (!cJSON_IsNumber(j))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %s, expected a number", md->config_path,
                       lang_path(p, sizeof p, where, key), json_type_name(j));
    *out = j->valuedouble;
    return OPTIQ_OK;
}

optiq_status model_dir_lang_bool_or(const model_dir *md, const char *key, int def, int *out, optiq_error *err) {
    const char *where;
    const cJSON *j = model_dir_lang_item(md, key, &where);
    char p[256];
    if (!j) {
        *out = def;
        return OPTIQ_OK;
    }
    if (!cJSON_IsBool(j))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %s, expected true or false", md->config_path,
                       lang_path(p, sizeof p, where, key), json_type_name(j));
    *out = cJSON_IsTrue(j);
    return OPTIQ_OK;
}

optiq_status model_dir_lang_string_or(const model_dir *md, const char *key, const char *def, const char **out,
                                      optiq_error *err) {
    const char *where;
    const cJSON *j = model_dir_lang_item(md, key, &where);
    char p[256];
    if (!j) {
        *out = def;
        return OPTIQ_OK;
    }
    if (!cJSON_IsString(j))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %s, expected a string", md->config_path,
                       lang_path(p, sizeof p, where, key), json_type_name(j));
    *out = j->valuestring;
    return OPTIQ_OK;
}
