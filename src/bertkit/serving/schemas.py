"""The request and response bodies of every route, as pydantic models: the OpenAPI schema is the contract.

Model routes take the Hugging Face Inference API's payloads (`{"inputs": ..., "parameters": {...}}`) of the
served model's task; `/v1/embeddings` takes OpenAI's. Each task's parameters are those of its pipeline, so a
parameter the task does not take is a 422, not something silently ignored.
"""

# (no `from __future__ import annotations`: the request types are built per server, with its limits, in a function)
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every error: one line, and its kind."""

    error: str
    error_type: str


# ---- task inputs and parameters ---------------------------------------------------------------------------


class TextPair(Strict):
    text: str
    text_pair: str | None = None


class QAInput(Strict):
    question: str
    context: str


class ClassificationParameters(Strict):
    top_k: int | None = Field(None, ge=1, description="labels per input, best first; null: all")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None


class TokenClassificationParameters(Strict):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = "none"
    ignore_labels: list[str] | None = None
    word_splitter: Literal["treebank", "bert"] | None = None


class QAParameters(Strict):
    top_k: int = Field(1, ge=1, le=100)
    doc_stride: int | None = Field(None, ge=1)
    max_answer_len: int = Field(15, ge=1)
    max_seq_len: int | None = Field(None, ge=16)
    max_question_len: int | None = Field(None, ge=1)
    handle_impossible_answer: bool | None = None
    align_to_words: bool = True


MASK_PATTERN, WORD_PATTERN = r"\[MASK\]", r"[^\W_]"
PATTERN_MESSAGES = {MASK_PATTERN: "a text for fill-mask needs at least one [MASK]",
                    WORD_PATTERN: "a target needs a letter or digit"}
Masked = Annotated[str, Field(pattern=MASK_PATTERN, description="a text with at least one [MASK]")]


Word = Annotated[str, Field(pattern=WORD_PATTERN, description="a token to score (with a letter or digit)")]


class FillMaskParameters(Strict):
    top_k: int = Field(5, ge=1, le=1000)
    targets: Word | Annotated[list[Word], Field(min_length=1)] | None = None


class NoParameters(Strict):
    pass


class FeatureParameters(Strict):
    normalize: bool | None = None
    pooling: Literal["mean", "cls"] | None = None
    truncate: bool | None = None


class Request(Strict):
    """What every model route's body has: the inputs, their task's parameters, and `truncate` (cut an input
    longer than the server's character limit instead of refusing it with 413)."""

    truncate: bool | None = Field(None, description="cut inputs over the length limit instead of a 413")


def request_types(max_inputs: int = 64) -> dict[str, type[Request]]:
    """Each task's request body, with this server's limit on inputs a request in the schema (a longer list is a
    413). The route of an embedding model takes "embedding-model": a `source_sentence` input is similarity."""

    def many(item):
        return Annotated[list[item], Field(max_length=max_inputs)]

    class SimilarityInput(Strict):
        source_sentence: str
        sentences: list[str] = Field(min_length=1, max_length=max(max_inputs - 1, 1))

    class ClassificationRequest(Request):
        inputs: Union[str, TextPair, many(Union[str, TextPair])]
        parameters: ClassificationParameters = ClassificationParameters()

    class TokenClassificationRequest(Request):
        inputs: Union[str, many(str)]
        parameters: TokenClassificationParameters = TokenClassificationParameters()

    class QARequest(Request):
        inputs: Union[QAInput, many(QAInput)]
        parameters: QAParameters = QAParameters()

    class FillMaskRequest(Request):
        inputs: Union[Masked, many(Masked)] = Field(description="texts with [MASK] where tokens are to be filled")
        parameters: FillMaskParameters = FillMaskParameters()

    class FeatureExtractionRequest(Request):
        """As the HF API, `normalize` (and `truncate`) may also come at the top level."""

        inputs: Union[str, many(str)]
        normalize: bool | None = None
        truncation_direction: Literal["right"] | None = None
        prompt_name: None = None
        parameters: FeatureParameters = FeatureParameters()

    class SimilarityRequest(Request):
        inputs: SimilarityInput
        parameters: NoParameters = NoParameters()

    class EmbeddingModelRequest(FeatureExtractionRequest):
        """An embedding model's route answers both: a `source_sentence` input is sentence-similarity."""

        inputs: Union[SimilarityInput, str, many(str)]

    class EmbeddingsRequest(Strict):
        """OpenAI's embeddings request."""

        model: str
        input: Union[str, many(str)] = Field(description="a text or a list of texts")
        encoding_format: Literal["float", "base64"] = "float"
        user: str | None = None

    return {"text-classification": ClassificationRequest, "token-classification": TokenClassificationRequest,
            "question-answering": QARequest, "fill-mask": FillMaskRequest,
            "feature-extraction": FeatureExtractionRequest, "sentence-similarity": SimilarityRequest,
            "embedding-model": EmbeddingModelRequest, "openai-embeddings": EmbeddingsRequest}


# ---- OpenAI embeddings ------------------------------------------------------------------------------------


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "bertkit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- status ------------------------------------------------------------------------------------------------


class Status(BaseModel):
    status: str


class ModelInfo(BaseModel):
    name: str
    task: str
    tasks: list[str]
    labels: list[str] | None
    max_length: int
    backend: str
    int8: bool
    device: str
    path: str
    loaded: bool
    max_batch_tokens: int | None  # padded tokens per forward (by device unless set)
    max_queue_tokens: int | None


class Info(BaseModel):
    bertkit: str
    versions: dict[str, str]
    models: list[ModelInfo]
    limits: dict[str, int | float]
    ready: bool
