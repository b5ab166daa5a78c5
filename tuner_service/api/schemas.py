"""JSON schemas of the request bodies and the problem response, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

_PARAMETER: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["int", "float", "choice", "boolean", "fixed"]},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "step": {"type": "number"},
        "sampling": {"type": "string", "enum": ["linear", "log", "reverse_log"]},
        "values": {"type": "array", "items": {}},
        "value": {},
        "default": {},
        "ordered": {"type": "boolean"},
        "per_layer": {"type": "boolean", "description": "neurons only: one width per hidden layer"},
        "condition": {
            "type": "object",
            "properties": {"parent": {"type": "string"}, "values": {"type": "array", "items": {}}},
        },
    },
}

COMPONENTS: dict[str, Any] = {
    "schemas": {
        "SearchSpace": {
            "type": "object",
            "description": "Parameters by name (hidden_layers, neurons, activation, learning_rate, optimizer, "
            "momentum, batch_size, dropout, l2, ...), or Keras Tuner's HyperParameters.get_config() JSON.",
            "additionalProperties": _PARAMETER,
        },
        "Study": {
            "type": "object",
            "required": ["name", "dataset", "task", "search_space"],
            "properties": {
                "name": {"type": "string", "maxLength": 200},
                "dataset": {
                    "type": "string",
                    "description": "'digits', 'builtin:NAME', 'sha256:HEX' or an id",
                },
                "task": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "enum": ["regression", "binary", "multilabel", "multiclass"],
                        },
                        "architecture": {"type": "string", "enum": ["sequential", "wide_deep"]},
                        "loss": {"type": "string"},
                        "output_activation": {"type": "string", "nullable": True},
                        "metrics": {"type": "array", "items": {"type": "string"}},
                        "normalize": {"type": "boolean"},
                        "scale_target": {"type": "boolean"},
                    },
                },
                "objective": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "direction": {"enum": ["min", "max"]}},
                        },
                    ]
                },
                "search_space": {"$ref": "#/components/schemas/SearchSpace"},
                "algorithm": {
                    "oneOf": [
                        {"type": "string", "enum": ["random", "grid", "bayesian", "hyperband"]},
                        {"type": "object", "properties": {"name": {"type": "string"}}},
                    ]
                },
                "max_trials": {"type": "integer", "minimum": 1},
                "executions_per_trial": {"type": "integer", "minimum": 1, "maximum": 10},
                "parallelism": {"type": "integer", "minimum": 1, "maximum": 64},
                "seed": {"type": "integer", "minimum": 0},
                "early_stopping": {
                    "type": "object",
                    "properties": {
                        "patience": {"type": "integer"},
                        "min_delta": {"type": "number"},
                        "max_epochs": {"type": "integer"},
                        "restore_best_weights": {"type": "boolean"},
                    },
                },
                "validation": {
                    "type": "object",
                    "properties": {"fraction": {"type": "number"}, "seed": {"type": "integer"}},
                },
                "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                "resources": {"type": "object", "description": '{"gpu": 1} or {"cpu": 1}'},
                "pruner": {"description": "none, median or asha, or an object with its options"},
                "warm_start": {
                    "type": "object",
                    "properties": {"studies": {"type": "array", "items": {"type": "integer"}}},
                },
                "learning_rate_from": {
                    "type": "object",
                    "description": "Centre learning_rate (log scale) on a finished range test's suggestion",
                    "properties": {"lr_range_test": {"type": "integer"}, "factor": {"type": "number"}},
                },
            },
        },
        "StudyPatch": {
            "type": "object",
            "properties": {"priority": {"type": "string", "enum": ["low", "normal", "high"]}},
        },
        "RangeTest": {
            "type": "object",
            "required": ["dataset", "task"],
            "properties": {
                "dataset": {"type": "string"},
                "task": {"type": "object"},
                "architecture": {
                    "type": "object",
                    "description": "Fixed hidden_layers, neurons, activation, optimizer, momentum, batch_size, "
                    "dropout, l2",
                },
                "min_lr": {"type": "number", "default": 1e-5},
                "max_lr": {"type": "number", "default": 10},
                "steps": {"type": "integer", "default": 500},
                "smoothing": {"type": "number", "default": 0.98},
                "seed": {"type": "integer"},
            },
        },
        "Rerun": {"type": "object", "properties": {"repeats": {"type": "integer", "minimum": 1, "maximum": 10}}},
        "DatasetUpload": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "target_column": {"type": "string"},
            },
        },
        "Problem": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                    },
                },
            },
        },
    },
    "responses": {
        "Problem": {
            "description": "An RFC 9457 problem",
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    },
}
