/*
 * chat.h — OpenAI-style chat messages to the prompt text a model's chat
 * template makes of them, byte for byte as transformers' apply_chat_template
 * (the processor's, for vision models) renders it.
 *
 * Messages pass through the same steps the reference stack takes before the
 * template sees them (each is matched by tests/test_chat.c against renders
 * made by tools/reference/gen_templates.py):
 *   1. "content": null becomes ""  (mlx_lm.server.process_message_content),
 *      then every other key whose value is null is dropped
 *      (transformers _normalize_chat_messages);
 *   2. a part {"type": "image_url", "image_url": {"url": U}} (or a bare
 *      string) becomes {"type": "image", "url": U}
 *      (ProcessorMixin._normalize_conversations); {"type": "image"} parts
 *      are passed as they are;
 *   3. tool_calls[].function.arguments given as a JSON string is parsed into
 *      an object (mlx_lm.server does this; templates index into it); a string
 *      that is not JSON is left as it is;
 *   4. when the template has no image syntax (the word "image" appears
 *      nowhere in it), list content is flattened to one string: text parts
 *      concatenated, each image part replaced by the family's placeholder —
 *      config.json model_type qwen* → <|vision_start|><|image_pad|><|vision_end|>
 *      (what the Qwen-VL templates write), gemma3 → <start_of_image> (the
 *      Gemma 3 processor's boi_token), gemma4 / llama / mllama → <|image|>;
 *      options.image_placeholder overrides it;
 *   5. reasoning given as reasoning_content, thinking or reasoning is copied
 *      to both "thinking" (first key) and "reasoning_content"
 *      (transformers _alias_reasoning_fields);
 *   6. variables: the special tokens of tokenizer_config.json
 *      (bos_token, eos_token, ..., extra_special_tokens), then the options'
 *      other keys and chat_template_kwargs (these win), then messages, tools
 *      (none when absent), documents (none) and add_generation_prompt.
 */
#ifndef OPTIQ_TEXT_CHAT_H
#define OPTIQ_TEXT_CHAT_H

#include "text/jinja.h"

/* Steps 1-5 on a parsed messages array; *out is a new list. placeholder may
 * be NULL (then images in a flattened message are an error). */
optiq_status chat_prepare_messages(const jval *messages, int flatten, const char *placeholder, jval **out,
                                   optiq_error *err);

/* Image placeholder of a model family (by config.json model_type), or NULL. */
const char *chat_family_placeholder(const char *model_type);

#endif
