"""The capability flags of LangChain's standard chat-model suites for a model on one promptwire
endpoint serving text: no tools or structured output against a model that cannot understand the
suites' prompts, no multimodal input, one model per endpoint, usage reported, no VCR cassettes
(the tests hit a live local server). Shared by ChatPromptwire's suites and ChatOpenAI's on the
OpenAI routes; a suite overrides what it can do beyond this."""

from __future__ import annotations


class TextEndpointFlags:
    """Mix in before the suite's class, so these flags win over its defaults."""

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # an endpoint serves one model

    @property
    def enable_vcr_tests(self) -> bool:
        return False  # the integration tests run against a live local server instead
