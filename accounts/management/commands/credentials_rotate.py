from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.fields import encrypted_fields


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret with the newest key of LEGACYFLO_ENCRYPTION_KEYS. "
            "Run after prepending a new key; then the old key can be removed.")

    def handle(self, *args, **options):
        total = 0
        for model, names in encrypted_fields():
            count = 0
            for pk in model._base_manager.values_list("pk", flat=True).iterator():
                with transaction.atomic():
                    obj = model._base_manager.select_for_update().get(pk=pk)
                    # Reading decrypts with any key; saving encrypts with the first (newest).
                    model._base_manager.filter(pk=pk).update(**{n: getattr(obj, n) for n in names})
                count += 1
            total += count
            self.stdout.write(f"{model._meta.label}: {count} rows re-encrypted ({', '.join(names)})")
        self.stdout.write(f"Done: {total} rows.")
