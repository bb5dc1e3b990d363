"""insurance_application: reads a PDF application from an e-mail or an upload, checks it and replies.

A PDF that cannot be read (damaged, encrypted, not a PDF, not one of the forms) fails the extract step, and
its failure handler ``unreadable`` replies saying which file and why. The run still ends failed, with
extract's error: the application was not processed, and an operator sees it among the failed runs.
"""

from pathlib import Path
from typing import Any

from actions.extract_pdf_data import ExtractPDFDataAction
from actions.pdf_templates import TemplateError, load_templates
from actions.send_email import SendEmailAction
from actions.validate_data import ValidateDataAction
from triggers.email import EmailTrigger
from workflows.base import Workflow

# Read once: every run renders the same Jinja2 text with its own results.
REPLY_BODY = (Path(__file__).resolve().parent / "templates" / "application_reply.txt").read_text(encoding="utf-8")
UNREADABLE_BODY = (Path(__file__).resolve().parent / "templates" / "application_unreadable.txt").read_text(
    encoding="utf-8")

# `from` is a Jinja2 keyword, hence the subscript; an upload has no sender, only the reply_to input.
RECIPIENT = "{{ inputs.reply_to or trigger_data['from'] }}"
# The engine reads a `when` that renders to None as "no condition", so no recipient must render as "".
HAS_RECIPIENT = "{{ inputs.reply_to or trigger_data['from'] or '' }}"


class _InputsSchema:
    """The inputs' JSON Schema, built when read, so ``company`` names the templates present now.

    Adding a company is adding a template file, with no restart; and nothing is read at import time.
    """

    def __get__(self, instance: object, owner: type) -> dict[str, Any]:
        try:
            company: dict[str, Any] = {"enum": [*load_templates(), ""]}
        except TemplateError:
            # A broken template folder must not break the workflow's listing; the extract step names the file.
            company = {"type": "string"}
        return {
            "type": "object",
            "properties": {
                "company": company,
                "reply_to": {"type": "string", "format": "email"},
                "attachments": {"type": "array", "items": {"type": "object"}},
            },
            # A misspelt reply_to would otherwise send the reply nowhere, silently.
            "additionalProperties": False,
        }


class InsuranceApplication(Workflow):
    """Demo 1: extract an application PDF's fields, validate them, and tell the applicant the outcome."""

    name = "insurance_application"
    description = (
        "Reads the PDF application attached to an e-mail (IMAP_*) or uploaded, validates it against its company's "
        "template and replies with what was read and what is missing."
    )
    trigger = EmailTrigger("inbox")
    inputs_schema = _InputsSchema()
    actions = [
        # The e-mail trigger and the upload both put files in trigger_data.attachments.
        ExtractPDFDataAction("extract", file="{{ trigger_data.attachments or [] }}", company="{{ inputs.company }}",
                             on_failure="unreadable"),
        ValidateDataAction(
            "validate", data="{{ steps.extract.extracted_data }}", template="{{ steps.extract.template }}"
        ),
        SendEmailAction(
            "notify",
            to=RECIPIENT,
            subject=(
                "{{ 'Application received' if steps.validate.validation_result == 'success' "
                "else 'Application incomplete' }}"
            ),
            body=REPLY_BODY,
            # Threads the reply with the applicant's mail; an upload has no Message-ID, and adds no header.
            in_reply_to="{{ trigger_data.message_id or '' }}",
            references="{{ trigger_data.message_id or '' }}",
            when=HAS_RECIPIENT,
        ),
        # Runs only when extract fails: the applicant hears that the file could not be read, not silence.
        SendEmailAction(
            "unreadable",
            to=RECIPIENT,
            subject="We could not read your application",
            body=UNREADABLE_BODY,
            in_reply_to="{{ trigger_data.message_id or '' }}",
            references="{{ trigger_data.message_id or '' }}",
            when=HAS_RECIPIENT,
        ),
    ]
