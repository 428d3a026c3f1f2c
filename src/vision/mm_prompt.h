/*
 * mm_prompt.h — a token prompt with images: placeholder expansion and the
 * position ids (multimodal RoPE for Qwen-VL, plain positions for Gemma-4).
 *
 * Expansion (Qwen3VLProcessor.__call__, spec §5.8): the chat template writes
 * each image as <|vision_start|><|image_pad|><|vision_end|>; the k-th
 * <|image_pad|> becomes n_k copies, n_k = grid_t·grid_h·grid_w / merge² of
 * image k. More markers than images: the surplus markers (from the end) are
 * removed with their start/end wrapper when present; fewer markers than
 * images is an error.
 *
 * Gemma-4 (wrap set; Gemma4Processor.__call__, spec §6.5): the template writes
 * the image token once per image; the k-th becomes <boi> + n_k image tokens +
 * <eoi>. A placeholder without an image is an error (the processor's re.sub
 * raises), as are fewer placeholders than images.
 *
 * Positions (get_rope_index, spec §5.10), computed incrementally so that a
 * session can append: text tokens take consecutive positions on all three
 * axes from the session's next text position p; a block of image tokens with
 * merged grid (gt, gh, gw) takes (p + t, p + h, p + w) in raster order, and
 * the text after it continues at p + max(gt, gh, gw). Decoding goes on from
 * the returned next position (mlx-vlm's cache offset + rope_delta). Without
 * mrope every token takes the next position on all three axes.
 */
#ifndef OPTIQ_VISION_MM_PROMPT_H
#define OPTIQ_VISION_MM_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct mm_tokens {
    int32_t image_pad;    /* <|image_pad|> (image_token_id) */
    int32_t video_pad;    /* <|video_pad|> (video_token_id), -1 when none */
    int32_t vision_start; /* <|vision_start|>, -1 when none */
    int32_t vision_end;   /* <|vision_end|>, -1 when none */
    int merge;            /* spatial merge size (mrope) */
    int mrope;            /* 1: Qwen-VL 3-axis positions for image blocks; 0: one position per token */
    int wrap;             /* 1: each image token expands to boi + n + eoi (Gemma-4) */
    int32_t boi, eoi;     /* begin / end of image tokens (wrap) */
} mm_tokens;

/* *out (malloc'd, *n_out) = ids with the k-th image_pad repeated
 * n_per_image[k] times (see above). */
optiq_status mm_expand(const mm_tokens *t, const int32_t *ids, size_t n, const int64_t *n_per_image, size_t n_images,
                       int32_t **out, size_t *n_out, optiq_error *err);

/* pos (3, n): the t, h, w rows for an expanded prompt that starts at text
 * position start; grid_thw (n_images, 3) in patches (t, h, w). Every run of
 * image_pad tokens must be exactly one image's block, images in order, all
 * consumed. *next receives the text position of the token after the prompt. */
optiq_status mm_positions(const mm_tokens *t, const int32_t *ids, size_t n, const int32_t *grid_thw, size_t n_images,
                          int64_t start, int32_t *pos, int64_t *next, optiq_error *err);

#endif
