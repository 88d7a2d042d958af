from django import forms
from django.conf import settings

from accounts.forms import SecretField
from buckets.models import AuthMode, Purpose
from buckets.rules import (
    aws_regions,
    bucket_name_problem,
    normalise_endpoint,
    region_problem,
    role_mode_problems,
)


class BucketForm(forms.Form):
    name = forms.CharField(max_length=63, label="Bucket name")
    region = forms.CharField(max_length=64, help_text="The AWS region the bucket lives in, e.g. eu-west-1.",
                             widget=forms.TextInput(attrs={"list": "aws-regions", "autocomplete": "off"}))
    endpoint_url = forms.URLField(required=False, label="Endpoint URL", assume_scheme="https",
                                  help_text="Only for S3-compatible stores (MinIO, Wasabi, Ceph...), which use an "
                                            "access key pair. Empty for AWS (AWS S3's own endpoints count as empty).")
    purpose = forms.ChoiceField(choices=Purpose.choices, initial=Purpose.DESTINATION)
    auth_mode = forms.ChoiceField(choices=AuthMode.choices, initial=AuthMode.KEYS, widget=forms.RadioSelect,
                                  label="How the portal reaches the bucket")
    role_arn = forms.CharField(max_length=2048, required=False, label="Role ARN",
                               help_text="The role in your AWS account, e.g. arn:aws:iam::123456789012:role/legacyflo. "
                                         "Its trust policy is shown below.")
    access_key_id = forms.CharField(max_length=128, required=False, label="Access key id")
    secret_access_key = SecretField(required=False, label="Secret access key")

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        problem = bucket_name_problem(name)
        if problem:
            raise forms.ValidationError(problem)
        return name

    def clean(self):
        data = super().clean()
        data["endpoint_url"] = normalise_endpoint(data.get("endpoint_url") or "")
        region = (data.get("region") or "").strip()
        problem = region_problem(region, has_endpoint=bool(data.get("endpoint_url")))
        if problem:
            self.add_error("region", problem)
        if data.get("auth_mode") == AuthMode.KEYS:
            if not data.get("access_key_id"):
                self.add_error("access_key_id", "Enter the access key id.")
            if not data.get("secret_access_key"):
                self.add_error("secret_access_key", "Enter the secret access key.")
        elif data.get("auth_mode") == AuthMode.ROLE:
            problems = role_mode_problems(endpoint_url=data["endpoint_url"],
                                          role_arn=(data.get("role_arn") or "").strip(),
                                          principal=settings.LEGACYFLO_AWS_PRINCIPAL_ARN)
            for field, message in problems.items():
                self.add_error(field, message)
        return data

    @staticmethod
    def regions():
        return aws_regions()


class CredentialsForm(forms.Form):
    access_key_id = forms.CharField(max_length=128, label="New access key id")
    secret_access_key = SecretField(label="New secret access key")


class RoleForm(forms.Form):
    role_arn = forms.CharField(max_length=2048, label="Role ARN")
