/*
 * reasoning.h — where a model's thinking begins and ends, and splitting
 * generated text into reasoning and answer.
 *
 * The markers are inferred from the vocabulary as mlx-lm does
 * (tokenizer_utils._infer_thinking): "<think>" / "</think>" when both are
 * tokens (Qwen3.5), else "<|channel>thought" / "<channel|>" when
 * "<|channel>" and "<channel|>" are (Gemma-4), else none. As mlx-lm's
 * server, the reasoning is the text between the markers (markers left out)
 * and the answer the text after the end marker; generated text that does not
 * open with the start marker (and a prompt not left inside an opened block)
 * is all answer. Newlines right after the end marker are dropped.
 *
 * The splitter takes the text piece by piece (streaming): bytes that may
 * begin a marker are held back until the next piece (or the finish call)
 * decides. Both markers begin with '<', which occurs nowhere else in them,
 * so a failed partial match never overlaps a new one except at the current
 * byte.
 */
#ifndef OPTIQ_TEXT_REASONING_H
#define OPTIQ_TEXT_REASONING_H

#include <stddef.h>
#include <stdint.h>

#include "optiq.h"

#define REASONING_MAX_IDS 8

typedef struct reasoning_tags {
    const char *open, *close;             /* NULL: the model has no thinking markers */
    int32_t open_ids[REASONING_MAX_IDS];  /* the markers' token ids (no special tokens added) */
    int32_t close_ids[REASONING_MAX_IDS];
    size_t n_open, n_close;
} reasoning_tags;

/* The markers of tok's vocabulary (open == NULL when it has none). */
void reasoning_tags_infer(const optiq_tokenizer *tok, reasoning_tags *out);

/* 1 when ids (a prompt, or a whole sequence) end inside an opened thinking
 * block: its last start marker comes after its last end marker. */
int reasoning_ids_open(const reasoning_tags *t, const int32_t *ids, size_t n);

typedef struct reasoning_split {
    const char *open, *close;
    int state;
    int opened;                 /* a thinking block was opened (by the prompt or the text) */
    size_t matched;             /* bytes of a marker matched so far */
    char *reasoning, *content;  /* output of the last call, NUL-terminated */
    size_t reasoning_len, content_len, cap_r, cap_c;
} reasoning_split;

/* tags may have no markers: then everything is answer. in_reasoning: the
 * prompt ends inside an opened block (reasoning_ids_open). */
void reasoning_split_init(reasoning_split *s, const reasoning_tags *tags, int in_reasoning);
/* Split the next piece: s->reasoning / s->content hold this call's output. -1 when out of memory. */
int reasoning_split_feed(reasoning_split *s, const char *piece, size_t len);
/* End of text: releases held-back bytes. -1 when out of memory. */
int reasoning_split_finish(reasoning_split *s);
void reasoning_split_free(reasoning_split *s);

#endif
