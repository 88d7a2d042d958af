from django import forms

from accounts.forms import SecretField
from buckets.models import AuthMode, Purpose
from buckets.rules import aws_regions, bucket_name_problem, region_problem


class BucketForm(forms.Form):
    name = forms.CharField(max_length=63, label="Bucket name")
    region = forms.CharField(max_length=64, help_text="The AWS region the bucket lives in, e.g. eu-west-1.",
                             widget=forms.TextInput(attrs={"list": "aws-regions", "autocomplete": "off"}))
    endpoint_url = forms.URLField(required=False, label="Endpoint URL", assume_scheme="https",
                                  help_text="Only for S3-compatible stores (MinIO, Wasabi, Ceph...). Empty for AWS.")
    purpose = forms.ChoiceField(choices=Purpose.choices, initial=Purpose.DESTINATION)
    auth_mode = forms.ChoiceField(choices=AuthMode.choices, initial=AuthMode.KEYS, widget=forms.RadioSelect,
                                  label="How the portal reaches the bucket")
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
        region = (data.get("region") or "").strip()
        problem = region_problem(region, has_endpoint=bool(data.get("endpoint_url")))
        if problem:
            self.add_error("region", problem)
        if data.get("auth_mode") == AuthMode.KEYS:
            if not data.get("access_key_id"):
                self.add_error("access_key_id", "Enter the access key id.")
            if not data.get("secret_access_key"):
                self.add_error("secret_access_key", "Enter the secret access key.")
        return data

    @staticmethod
    def regions():
        return aws_regions()


class CredentialsForm(forms.Form):
    access_key_id = forms.CharField(max_length=128, label="New access key id")
    secret_access_key = SecretField(label="New secret access key")
