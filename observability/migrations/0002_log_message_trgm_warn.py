"""A trigram index of the warning-and-above log lines only: searching those levels for a text
that is common at lower levels stays fast (benchmarks/bench_logs.py)."""

import django.contrib.postgres.indexes
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("observability", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="logentry",
            index=django.contrib.postgres.indexes.GinIndex(
                condition=models.Q(("level__gte", 30)),
                fields=["message"],
                name="log_message_trgm_warn",
                opclasses=["gin_trgm_ops"],
            ),
        ),
    ]
