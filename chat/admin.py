"""The model catalogue, system prompt presets, conversations and messages in Django admin."""

from django.contrib import admin

from chat.models import ChatModel, Conversation, Message, PromptPreset


@admin.register(ChatModel)
class ChatModelAdmin(admin.ModelAdmin):
    """The model catalogue: admins switch models on/off and keep prices current from the list."""

    list_display = [
        "label",
        "name",
        "provider",
        "enabled",
        "is_default",
        "supports_vision",
        "sort_order",
        "input_price_per_million",
        "output_price_per_million",
    ]
    list_editable = ["enabled", "is_default", "supports_vision", "sort_order", "input_price_per_million", "output_price_per_million"]
    list_filter = ["provider", "enabled"]
    search_fields = ["name", "label"]


@admin.register(PromptPreset)
class PromptPresetAdmin(admin.ModelAdmin):
    """System prompts users may pick for a conversation; only enabled ones are offered, in `sort` order."""

    list_display = ["name", "enabled", "sort"]
    list_editable = ["enabled", "sort"]
    list_filter = ["enabled"]
    search_fields = ["name", "text"]


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "status", "content", "error_code", "model", "created"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["display_title", "owner", "model", "updated", "archived"]
    list_filter = ["archived", "model"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner", "model"]
    readonly_fields = [
        "owner", "title", "title_is_auto", "model", "system_prompt", "preset", "created", "updated", "archived", "current_leaf",
    ]
    inlines = [MessageInline]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only: messages change only through the streaming pipeline."""

    list_display = ["id", "conversation", "role", "status", "model", "completion_tokens", "created"]
    list_filter = ["role", "status", "provider"]
    search_fields = ["content", "conversation__title"]
    list_select_related = ["conversation"]
    raw_id_fields = ["conversation", "parent"]

    def get_readonly_fields(self, request: object, obj: Message | None = None) -> list[str]:
        return [field.name for field in Message._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
